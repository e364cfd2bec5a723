"""`artifactkit roundtrip-eval` end to end: a tiny real model trained for a few steps on
the embedded corpus, real checkpoints in the project format, real shards (made with a
tokenizer trained in the session), real artifacts, and legacy .ptz files."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import sentencepiece
import torch
import torch.nn.functional as functional
from click.testing import CliRunner

from artifactkit.cli import main
from artifactkit.format.akit import pack_state_dict, write_artifact
from artifactkit.format.reader import read_artifact
from artifactkit.plan.policy import resolve_policy
from artifactkit.roundtrip.model_factory import build_model
from eval.bpb import build_byte_tables, stream_byte_count
from eval.evaluate import evaluate_bpb
from eval.shards import load_tokens, write_shard

TINY_LM = Path(__file__).resolve().parents[1] / "eval" / "tiny_lm.py"
CONFIG = {"vocab_size": 1024, "dim": 160, "heads": 2, "layers": 1, "max_seq_len": 64, "seq_len": 64}


def encode_documents(sp: sentencepiece.SentencePieceProcessor, text: str) -> np.ndarray:
    ids: list[int] = []
    for paragraph in (p for p in text.split("\n\n") if p.strip()):
        ids += [1, *sp.encode(paragraph)]
    return np.asarray(ids, dtype=np.uint16)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, corpus_tokenizer, corpus_text) -> Path:
    """A directory holding the factory module, val shards, the tokenizer and a checkpoint
    of a model trained for 50 steps (so quantization measurably hurts it)."""
    root = tmp_path_factory.mktemp("roundtrip")
    shutil.copy(TINY_LM, root / "tiny_lm.py")
    sp = sentencepiece.SentencePieceProcessor(model_file=str(corpus_tokenizer))
    text = corpus_text
    train_tokens = torch.from_numpy(encode_documents(sp, text[:300_000]).astype(np.int64))
    val_tokens = encode_documents(sp, text[-60_000:])
    write_shard(root / "val_000000.bin", val_tokens[: len(val_tokens) // 2])
    write_shard(root / "val_000001.bin", val_tokens[len(val_tokens) // 2 :])

    import importlib.util

    # One intra-op thread: the model is tiny, and a second thread's spin-waiting costs
    # 10x the CPU time on a busy 2-core machine. Restored below.
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    spec = importlib.util.spec_from_file_location("tiny_lm_for_training", root / "tiny_lm.py")
    tiny_lm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny_lm)
    torch.manual_seed(0)
    model = tiny_lm.build(CONFIG)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        starts = torch.randint(0, len(train_tokens) - 65, (16,), generator=generator)
        batch = torch.stack([train_tokens[s : s + 65] for s in starts.tolist()])
        loss = functional.cross_entropy(model(batch[:, :-1]).reshape(-1, 1024), batch[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.set_num_threads(previous_threads)
    state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    torch.save(
        {
            "format": "artifactkit-checkpoint/1",
            "state_dict": state,
            "config": CONFIG,
            "arch": "tiny_lm:build",
            "step": 50,
            "metrics": {"train_loss": loss.item()},
            "tokenizer_sha256": hashlib.sha256(corpus_tokenizer.read_bytes()).hexdigest(),
        },
        root / "ckpt.pt",
    )
    torch.save(state, root / "raw_state.pt")
    (root / "config.json").write_text(json.dumps(CONFIG))
    write_artifact(root / "fp16.akit", pack_state_dict(state, resolve_policy("fp16")))
    write_artifact(root / "int2.akit", pack_state_dict(state, resolve_policy("int6-mixed", bits="attn=2,mlp=2,embed=2")))
    shutil.copy(corpus_tokenizer, root / "tokenizer.model")
    return root


@pytest.fixture(autouse=True)
def in_workdir(workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model; see the note in `workdir`
    yield
    torch.set_num_threads(previous_threads)


def run(*args: str):
    result = CliRunner().invoke(main, list(args))
    return result


def run_json(*args: str) -> dict:
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout)


BASE = ("--val", "val_*.bin", "--tokenizer", "tokenizer.model", "--max-tokens", "3000")


def state_of(path: str) -> dict:
    return torch.load(path, weights_only=True)["state_dict"]


def test_fp16_artifact_roundtrip_has_near_zero_delta(workdir):
    report = run_json("roundtrip-eval", "ckpt.pt", "--artifact", "fp16.akit", *BASE)
    for key in ("val_loss_fp", "val_bpb_fp", "val_loss_q", "val_bpb_q", "delta_bpb", "tokens", "bytes", "mode"):
        assert key in report
    assert report["policy"] == "fp16" and "int6" not in report["schemes"]
    assert abs(report["delta_bpb"]) < 1e-3
    assert report["delta_bpb"] == pytest.approx(report["val_bpb_q"] - report["val_bpb_fp"], abs=1e-12)
    # The float number is what the evaluator gives the checkpoint's model directly.
    sp = sentencepiece.SentencePieceProcessor(model_file="tokenizer.model")
    tables = build_byte_tables(sp)
    model = build_model("tiny_lm:build", CONFIG, state_of("ckpt.pt"))
    tokens = load_tokens("val_*.bin")
    direct = evaluate_bpb(model, tokens, tables, seq_len=64, max_tokens=3000)
    assert report["val_bpb_fp"] == pytest.approx(direct.val_bpb, rel=1e-9)
    assert report["tokens"] == 3000 // 64 * 64 and report["mode"] == "standard" and report["seq_len"] == 64
    assert report["bytes"] == stream_byte_count(tables, tokens[: report["tokens"] + 1])


def test_trained_model_beats_uniform_and_default_policy_is_packed_in_memory(workdir):
    report = run_json("roundtrip-eval", "ckpt.pt", *BASE)
    assert report["artifact"].startswith("in memory") and report["policy"] == "int6-mixed"
    assert report["schemes"].get("int6", 0) >= 2 and report["codec"]
    assert report["val_loss_fp"] < np.log(1024) - 1.0, "50 training steps must beat the uniform model"
    # The quantized number is the dequantized default-policy artifact evaluated directly.
    sp = sentencepiece.SentencePieceProcessor(model_file="tokenizer.model")
    state = read_artifact(pack_state_dict(state_of("ckpt.pt")).data).state_dict()
    direct = evaluate_bpb(build_model("tiny_lm:build", CONFIG, state), load_tokens("val_*.bin"),
                          build_byte_tables(sp), seq_len=64, max_tokens=3000)
    assert report["val_bpb_q"] == pytest.approx(direct.val_bpb, rel=1e-9)


def test_regression_labels_name_the_real_scheme_codec_and_mode(workdir):
    """Bug: int6 and sliding-window results were published as "int8_zlib". The labels
    must come from the artifact header and the evaluation actually run."""
    result = run("roundtrip-eval", "ckpt.pt", "--artifact", "int2.akit", *BASE, "--stride", "16")
    assert result.exit_code == 0, result.stderr
    header = read_artifact("int2.akit").header
    assert f"codec {header['codec']}" in result.stdout
    assert "int2 x" in result.stdout and "int8" not in result.stdout and "zlib" not in result.stdout
    for expected in ("int2.akit", "sliding (seq_len 64, stride 16)", "val_bpb", "quantized", "delta"):
        assert expected in result.stdout


def test_max_delta_exit_codes(workdir):
    report = run_json("roundtrip-eval", "ckpt.pt", "--artifact", "int2.akit", *BASE)
    delta = report["delta_bpb"]
    assert delta > 0.01, "2-bit weights must cost a trained model real bits"
    failed = run("roundtrip-eval", "ckpt.pt", "--artifact", "int2.akit", *BASE, "--max-delta", f"{delta / 2}", "--json")
    assert failed.exit_code == 1
    assert json.loads(failed.stdout)["passed"] is False
    assert failed.stderr.startswith("error: int2.akit: delta_bpb") and "exceeds --max-delta" in failed.stderr
    passed = run("roundtrip-eval", "ckpt.pt", "--artifact", "int2.akit", *BASE, "--max-delta", f"{delta * 2}", "--json")
    assert passed.exit_code == 0 and json.loads(passed.stdout)["passed"] is True


def test_sliding_window_through_the_cli_scores_every_target_once(workdir):
    report = run_json("roundtrip-eval", "ckpt.pt", "--artifact", "fp16.akit", *BASE, "--stride", "32",
                      "--seq-len", "48", "--batch-tokens", "500")
    assert (report["mode"], report["stride"], report["seq_len"], report["tokens"]) == ("sliding", 32, 48, 3000)


def test_raw_state_dict_needs_model_and_config(workdir):
    result = run("roundtrip-eval", "raw_state.pt", *BASE)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: raw_state.pt: is a state_dict with no model factory reference")
    report = run_json("roundtrip-eval", "raw_state.pt", "--model", "tiny_lm:build", "--config", "config.json", *BASE)
    checkpoint_report = run_json("roundtrip-eval", "ckpt.pt", *BASE)
    assert report["val_bpb_fp"] == pytest.approx(checkpoint_report["val_bpb_fp"], rel=1e-12)


def test_missing_unexpected_and_wrong_shape_keys_are_listed(workdir):
    state = dict(torch.load("raw_state.pt", weights_only=True))
    state["extra.weight"] = torch.zeros(3)
    del state["ln_f.bias"]
    torch.save(state, "broken_state.pt")
    result = run("roundtrip-eval", "broken_state.pt", "--model", "tiny_lm:build", "--config", "config.json", *BASE)
    assert result.exit_code == 2 and "Traceback" not in result.output
    message = result.stderr
    assert message.startswith("error: broken_state.pt: the model built by tiny_lm:build does not match")
    assert "missing keys (1): ln_f.bias" in message and "unexpected keys (1): extra.weight" in message
    assert "--model module:function" in message
    Path("small.json").write_text(json.dumps({**CONFIG, "dim": 64}))
    result = run("roundtrip-eval", "raw_state.pt", "--model", "tiny_lm:build", "--config", "small.json", *BASE)
    assert result.exit_code == 2 and "wrong shapes" in result.stderr and "tok_emb.weight (1024, 160) vs model (1024, 64)" in result.stderr


def test_bad_model_references_are_clean_errors(workdir):
    for reference, expected in [
        ("no_colon", "expected a factory reference 'module:function'"),
        ("no_such_module_xyz:build", "cannot import module 'no_such_module_xyz'"),
        ("tiny_lm:no_such_function", "module 'tiny_lm' has no 'no_such_function'"),
    ]:
        result = run("roundtrip-eval", "ckpt.pt", "--model", reference, *BASE)
        assert result.exit_code == 2, reference
        assert result.stderr.startswith("error: ") and expected in result.stderr, result.stderr


def test_bad_shard_header_through_the_cli(workdir):
    raw = bytearray(Path("val_000001.bin").read_bytes())
    raw[0:4] = (999).to_bytes(4, "little")
    Path("broken").mkdir(exist_ok=True)
    Path("broken/val_000000.bin").write_bytes(bytes(raw))
    result = run("roundtrip-eval", "ckpt.pt", "--val", "broken/val_*.bin", "--tokenizer", "tokenizer.model")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: broken/val_000000.bin: bad magic 999 (expected 20240520); not a FineWeb token shard"
    )
    assert "Traceback" not in result.output
    empty = run("roundtrip-eval", "ckpt.pt", "--val", "nothing_*.bin", "--tokenizer", "tokenizer.model")
    assert empty.exit_code == 2 and "no shard files match" in empty.stderr


def test_wrong_tokenizer_is_refused(workdir, fallback_sp_model):
    result = run("roundtrip-eval", "ckpt.pt", "--val", "val_*.bin", "--tokenizer", str(fallback_sp_model))
    assert result.exit_code == 2 and "differs from the tokenizer the checkpoint was trained with" in result.stderr
    garbage = Path("garbage.model")
    garbage.write_bytes(b"not a tokenizer")
    result = run("roundtrip-eval", "ckpt.pt", "--val", "val_*.bin", "--tokenizer", "garbage.model")
    assert result.exit_code == 2 and "not a SentencePiece model" in result.stderr


def test_too_few_tokens_is_a_clean_error(workdir):
    result = run("roundtrip-eval", "ckpt.pt", *BASE[:4], "--max-tokens", "10")
    assert result.exit_code == 2 and "fewer than one window of seq_len 64" in result.stderr


def test_help_documents_the_factory_and_defaults():
    result = run("roundtrip-eval", "--help")
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for expected in ("--max-delta", "--stride", "current directory is importable", "train_seq_len", "--json"):
        assert expected in text


@pytest.fixture(scope="module")
def fallback_sp_model(tmp_path_factory, workdir, corpus_text) -> Path:
    """A different real tokenizer file (trained here) for the mismatch test."""
    path = tmp_path_factory.mktemp("tok") / "other"
    lines = [line for line in corpus_text[-60_000:].splitlines() if line.strip()]
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_prefix=str(path), model_type="bpe", vocab_size=512,
        byte_fallback=True, minloglevel=2, hard_vocab_limit=False,
    )
    return path.with_suffix(".model")


def test_real_process_prints_one_error_line_and_exits_2(workdir):
    """Through a real process (not CliRunner): one `error:` line, exit 2, no traceback."""
    import subprocess
    import sys

    Path("cut").mkdir(exist_ok=True)
    Path("cut/val_000000.bin").write_bytes(Path("val_000000.bin").read_bytes()[:-1])
    completed = subprocess.run(
        [sys.executable, "-c", "from artifactkit.cli import main; main()", "roundtrip-eval", "ckpt.pt",
         "--val", "cut/val_*.bin", "--tokenizer", "tokenizer.model"],
        capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 2
    assert completed.stdout == ""
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cut/val_000000.bin: header says")
    assert "truncated or corrupt" in lines[0]


def test_default_seq_len_comes_from_the_config_then_1024():
    from artifactkit.roundtrip.evaluate import default_seq_len

    assert default_seq_len({"seq_len": 64}) == 64
    assert default_seq_len({"train_seq_len": 2048, "dim": 3}) == 2048
    assert default_seq_len({"dim": 3}, {"seq_len": 128}) == 128
    assert default_seq_len({}, None) == 1024
    assert default_seq_len({"seq_len": 0, "train_seq_len": True}) == 1024


def test_damaged_artifact_and_missing_cuda_are_clean_errors(workdir):
    data = bytearray(Path("fp16.akit").read_bytes())
    data[-5] ^= 0xFF
    Path("damaged.akit").write_bytes(bytes(data))
    result = run("roundtrip-eval", "ckpt.pt", "--artifact", "damaged.akit", *BASE)
    assert result.exit_code == 2 and result.stderr.startswith("error: damaged.akit: ")
    assert "Traceback" not in result.output
    if not torch.cuda.is_available():
        result = run("roundtrip-eval", "ckpt.pt", *BASE, "--device", "cuda")
        assert result.exit_code == 2 and "--device cuda: no CUDA device" in result.stderr


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch build has no torch.distributed")
def test_cli_under_torchrun_splits_windows_and_reports_once(workdir):
    """Two CPU ranks (gloo): one JSON document (rank 0), the same counts and score as a
    single process."""
    import subprocess
    import sys

    Path("launch.py").write_text("from artifactkit.cli import main\nmain()\n")
    args = ["roundtrip-eval", "ckpt.pt", "--artifact", "fp16.akit", *BASE, "--stride", "40", "--json"]
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "launch.py", *args],
        capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    distributed = json.loads(completed.stdout)
    single = run_json(*args[:-1])
    assert distributed["world_size"] == 2 and single["world_size"] == 1
    assert (distributed["tokens"], distributed["bytes"], distributed["mode"]) == (single["tokens"], single["bytes"], "sliding")
    for key in ("val_bpb_fp", "val_bpb_q", "val_loss_fp"):
        assert distributed[key] == pytest.approx(single[key], rel=1e-6)


# ------------------------------------------------------------------ broken promises (issue 14)


def seed_int6_ptz(akit: str | Path, output: Path) -> Path:
    """The seed's `final_model.int6.ptz` layout (lzma of torch.save({"w": ..., "m": ...})),
    built from an .akit's stored tensors: int codes under `NAME.q`, fp16 row scales under
    `NAME.s`, everything else as stored (fp16 small tensors, fp32 control tensors). Like
    the seed's files it records neither banks nor original dtypes."""
    import io
    import lzma

    weights, meta = {}, {}
    for stored in read_artifact(akit).iter_stored():
        name = stored.tensor.name
        if stored.quantized is not None:
            weights[f"{name}.q"], weights[f"{name}.s"] = stored.quantized.codes, stored.quantized.scales
            meta[name] = {"t": "i6"}
        else:
            weights[name] = stored.values
            meta[name] = "pt"
    buffer = io.BytesIO()
    torch.save({"w": weights, "m": meta}, buffer)
    output.write_bytes(lzma.compress(buffer.getvalue()))
    return output


def test_regression_roundtrip_eval_evaluates_a_legacy_seed_ptz_with_the_checkpoint_as_template(workdir):
    """Bug: `--artifact` refused legacy .ptz files ("not an .akit artifact") while its own
    error said they are detected by content. The seed format stores fp16 passthrough
    tensors and no dtypes: the checkpoint's names and float32 dtypes are the template, so
    the .ptz scores exactly what the .akit it was made from scores."""
    write_artifact("int6.akit", pack_state_dict(state_of("ckpt.pt")))
    seed_int6_ptz("int6.akit", Path("final_model.int6.ptz"))
    from_akit = run_json("roundtrip-eval", "ckpt.pt", "--artifact", "int6.akit", *BASE)
    result = run("roundtrip-eval", "ckpt.pt", "--artifact", "final_model.int6.ptz", *BASE, "--json")
    assert result.exit_code == 0, result.stderr
    from_ptz = json.loads(result.stdout)
    assert from_ptz["val_bpb_q"] == from_akit["val_bpb_q"]
    assert from_ptz["artifact_bytes"] == Path("final_model.int6.ptz").stat().st_size
    assert from_ptz["policy"] == "legacy:seed_int6" and "int6" in from_ptz["schemes"]
    # The fp16 tensors (and the float32 dequantized codes) took the checkpoint's float32.
    fp16 = from_akit["schemes"]["fp16"]
    assert fp16 > 0 and "names and dtypes follow the checkpoint" in result.stderr
    assert f"{fp16:,} tensors cast to the checkpoint's dtype" in result.stderr


def test_legacy_ptz_for_another_model_is_a_clean_error(workdir, tmp_path):
    from artifactkit.synthetic import seed_shaped_state_dict

    foreign = tmp_path / "foreign.akit"
    write_artifact(foreign, pack_state_dict(seed_shaped_state_dict(layers=1, dim=64, kv_heads=1, head_dim=32,
                                                                   vocab=32)))
    seed_int6_ptz(foreign, Path("foreign.ptz"))
    result = run("roundtrip-eval", "ckpt.pt", "--artifact", "foreign.ptz", *BASE)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.startswith("error: foreign.ptz: ") and "are not in the checkpoint" in result.stderr


def test_legacy_state_dict_restores_banks_and_dtypes_from_the_template(tmp_path):
    """A banked bf16 checkpoint and a seed .ptz of its unbanked tensors: banks come back
    under the checkpoint's names, every tensor in the checkpoint's dtype."""
    from artifactkit.checkpoint import load_checkpoint
    from artifactkit.format.open import open_artifact
    from artifactkit.roundtrip.evaluate import legacy_state_dict
    from artifactkit.synthetic import seed_shaped_state_dict

    state = {name: tensor.to(torch.bfloat16) for name, tensor in
             seed_shaped_state_dict(layers=2, dim=64, kv_heads=1, head_dim=32, vocab=64).items()}
    torch.save(state, tmp_path / "banked.pt")
    write_artifact(tmp_path / "banked.akit", pack_state_dict(state))
    seed_int6_ptz(tmp_path / "banked.akit", tmp_path / "banked.ptz")
    expected = read_artifact(tmp_path / "banked.akit").state_dict()
    restored, notice = legacy_state_dict(open_artifact(tmp_path / "banked.ptz"),
                                         load_checkpoint(tmp_path / "banked.pt"), "banked.ptz")
    assert list(restored) == list(expected) == list(state)
    for name, tensor in restored.items():
        assert tensor.dtype == torch.bfloat16 and tensor.shape == state[name].shape, name
        assert torch.equal(tensor, expected[name]), name
    assert "4 banks restored" in notice and "neither banks nor original dtypes" in notice


def test_regression_in_memory_pack_is_what_pack_writes(workdir):
    """Bug: roundtrip-eval packed the checkpoint in memory without the header's `meta`
    block, so it reported an artifact smaller than `pack` writes."""
    assert run("pack", "ckpt.pt", "-o", "packed.akit").exit_code == 0
    report = run_json("roundtrip-eval", "ckpt.pt", *BASE)
    assert report["artifact_bytes"] == Path("packed.akit").stat().st_size
    with_file = run_json("roundtrip-eval", "ckpt.pt", "--artifact", "packed.akit", *BASE)
    assert report["val_bpb_q"] == with_file["val_bpb_q"]


def _stderr_in_a_terminal(*args: str) -> str:
    """Run the CLI in a real process whose stderr is a pseudo-terminal; return what it wrote there."""
    import os
    import pty
    import subprocess
    import sys

    leader, follower = pty.openpty()
    try:
        completed = subprocess.run([sys.executable, "-m", "artifactkit", *args], stdout=subprocess.PIPE,
                                   stderr=follower, timeout=300)
        os.close(follower)
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
    assert completed.returncode == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.slow
def test_regression_no_progress_draws_no_bar_in_a_terminal(workdir):
    """Bug: `--no-progress` still drew the eval bar when stderr was a terminal (the
    evaluator had its own default rule: `progress or isatty`)."""
    args = ("roundtrip-eval", "ckpt.pt", "--artifact", "fp16.akit", *BASE)
    assert "eval [" in _stderr_in_a_terminal(*args), "the default draws the bar in a terminal"
    assert "eval [" not in _stderr_in_a_terminal(*args, "--no-progress")


def test_evaluator_progress_rule(tiny_model_and_stream, monkeypatch):
    """evaluate_bpb: True draws, False never does (even in a terminal), None follows isatty."""
    import io

    model, tokens, tables = tiny_model_and_stream

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for progress, drawn in ((False, False), (True, True), (None, True)):
        terminal = Terminal()
        monkeypatch.setattr("sys.stderr", terminal)
        evaluate_bpb(model, tokens, tables, seq_len=64, max_tokens=640, progress=progress)
        assert ("eval [" in terminal.getvalue()) is drawn, progress


@pytest.fixture
def tiny_model_and_stream(workdir):
    sp = sentencepiece.SentencePieceProcessor(model_file="tokenizer.model")
    model = build_model("tiny_lm:build", CONFIG, state_of("ckpt.pt"))
    return model, load_tokens("val_*.bin"), build_byte_tables(sp)
