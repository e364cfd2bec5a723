"""size-report: measured attribution adds up, the what-if table matches real packs, code
bytes are counted as UTF-8, plots are real PNGs."""

from __future__ import annotations

import json
import struct
import zlib

import pytest
import torch
from click.testing import CliRunner

from artifactkit.budget import count_code
from artifactkit.cli import main
from artifactkit.format.akit import encode_artifact, pack_state_dict
from artifactkit.format.loader_export import build_loader
from artifactkit.format.open import read_input
from artifactkit.format.reader import read_artifact
from artifactkit.plan.policy import resolve_policy
from artifactkit.quantize.apply import quantize_state_dict
from artifactkit.report.size import ALL_CATEGORIES
from artifactkit.synthetic import seed_shaped_state_dict

CODE_TEXT = "# ünïcödé ✓ — 日本語\nprint('héllo')\n"


CODEC = "zlib"  # the attribution logic is codec-independent; zlib keeps the test fast
CLIP = "attn=std:12,mlp=std:12,embed=std:16"  # fixed clip rules: no per-row search, a fast test


def small_state() -> dict[str, torch.Tensor]:
    # 288x288 attention / MLP matrices: above the 65,536-element threshold, so int6
    state = seed_shaped_state_dict(layers=1, dim=288, kv_heads=2, head_dim=144, mlp_mult=1, vocab=256)
    del state["bigram.emb.weight"]  # 262k parameters the test does not need
    return state


@pytest.fixture(scope="module")
def report_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("size_report")
    checkpoint = folder / "model.pt"
    torch.save(small_state(), checkpoint)
    code = folder / "train_gpt.py"
    code.write_text(CODE_TEXT, encoding="utf-8")
    (folder / "tokenizer.model").write_bytes(b"\x00" * 100)
    plot, markdown = folder / "report.png", folder / "report.md"
    result = CliRunner().invoke(main, ["size-report", str(checkpoint), "--code", str(code), "--codec", CODEC, "--clip", CLIP,
                                       "--codecs", "zlib,zstd", "--count-loader", "--plot", str(plot), "--markdown", str(markdown), "--json"])
    assert result.exit_code == 0, result.output
    return folder, json.loads(result.stdout), result.stderr


def test_regression_size_report_of_a_checkpoint_measures_what_pack_writes(report_run, tmp_path):
    """Bug: size-report packed a checkpoint in memory without the header's `meta` block
    and reported an artifact smaller than the one `pack` writes (241 B on the demo), so
    near the budget it could say "fits" where `check` fails."""
    folder, document, _ = report_run
    written = tmp_path / "packed.akit"
    result = CliRunner().invoke(main, ["pack", str(folder / "model.pt"), "-o", str(written), "--codec", CODEC,
                                       "--clip", CLIP, "--code", str(folder / "train_gpt.py")])
    assert result.exit_code == 0, result.stderr
    assert document["artifact_bytes"] == written.stat().st_size
    assert read_artifact(written).header["meta"] == {"source_kind": "state_dict"}


def test_categories_and_tensors_add_up_to_the_artifact(report_run):
    folder, document, _ = report_run
    category_sum = sum(c["bytes"] for c in document["categories"])
    assert abs(category_sum - document["artifact_bytes"]) <= 0.01 * document["artifact_bytes"]
    assert category_sum == document["artifact_bytes"]  # exact by construction (overhead included)
    assert [c for c in document["categories"] if c["category"] == "overhead"][0]["bytes"] > 0
    for category in document["categories"]:
        if category["category"] == "overhead":
            continue
        members = [t for t in document["tensors"] if t["category"] == category["category"]]
        assert sum(t["bytes"] for t in members) == category["bytes"]
        assert sum(t["params"] for t in members) == category["params"]
        # measured, not proportional to parameters: attributed bytes track standalone compression
        assert abs(category["bytes"] - category["standalone_bytes"]) <= 0.02 * category["standalone_bytes"] + 64
    attn = [t for t in document["tensors"] if t["category"] == "attn"]
    assert {t["bits"] for t in attn} == {6} and all(1 < t["entropy_bits"] < 5.98 for t in attn)  # int6: at most log2(63) bits
    assert {"codec", "bytes", "compress_s", "decompress_s"} <= set(document["codecs"][0])
    assert [c["codec"] for c in document["codecs"]] == ["zlib", "zstd"]
    assert document["codecs"][0]["bytes"] == document["artifact_bytes"]


def test_what_if_rows_match_real_packs(report_run):
    _, document, _ = report_run
    rows = {(w["category"], w["bits"]): w for w in document["what_if"]}
    other = document["budget"]["code_bytes"] + document["budget"]["loader_bytes"]
    assert {(c, b) for c in ("attn", "mlp", "embed", ALL_CATEGORIES) for b in (5, 6, 7, 8)} == set(rows)
    assert rows[("attn", 6)]["total_bytes"] == document["budget"]["total_bytes"]  # int6 is the current width
    state = small_state()
    for bits, label in (("embed=6", ("embed", 6)), ("mlp=5", ("mlp", 5)), ("attn=6,mlp=6,embed=6", (ALL_CATEGORIES, 6))):
        actual = pack_state_dict(state, resolve_policy("int6-mixed", bits=bits, clip=CLIP), CODEC).artifact_bytes
        predicted = rows[label]["total_bytes"] - other
        assert abs(predicted - actual) <= 0.01 * actual, (label, predicted, actual)
        assert rows[label]["fits"] is True


def test_code_bytes_budget_line_and_uncounted_files(report_run):
    folder, document, stderr = report_run
    raw = len(CODE_TEXT.encode("utf-8"))
    assert raw > len(CODE_TEXT)  # multi-byte UTF-8 really is counted in bytes
    budget = document["budget"]
    assert budget["code_bytes"] == raw and budget["code_rule"] == "raw"
    assert budget["loader_bytes"] == build_loader(CODEC).size_bytes  # --count-loader: this artifact's loader
    assert budget["total_bytes"] == document["artifact_bytes"] + raw + budget["loader_bytes"]
    assert budget["headroom"] == 16_000_000 - budget["total_bytes"]
    assert [f["path"].endswith("tokenizer.model") for f in document["uncounted_files"]].count(True) == 1
    assert "tokenizer.model" in stderr and "not counted" in stderr
    account = count_code([folder / "train_gpt.py"])
    assert account.files[0].raw_bytes == raw and account.compressed_bytes <= raw


def test_plot_and_markdown_are_written(report_run):
    folder, _, _ = report_run
    png = (folder / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    width, height = struct.unpack(">II", png[16:24])
    assert width > 800 and height > 600
    chunks, position = [], 8
    while position < len(png):  # every chunk's CRC is valid: a complete PNG, not a truncated one
        length, kind = struct.unpack(">I4s", png[position : position + 8])
        body = png[position + 8 : position + 8 + length]
        assert struct.unpack(">I", png[position + 8 + length : position + 12 + length])[0] == zlib.crc32(kind + body)
        chunks.append(kind)
        position += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND"
    markdown = (folder / "report.md").read_text(encoding="utf-8")
    assert "](report.png)" in markdown and "| attn |" in markdown and "What-if" in markdown


def test_artifact_input_reports_the_same_bytes(tmp_path):
    state = small_state()
    model = quantize_state_dict(state)
    packed = encode_artifact(model, "ans")
    # the model rebuilt from the artifact re-encodes to the very same bytes
    assert encode_artifact(read_artifact(packed.data).quantized_model(), "ans").data == packed.data
    path = tmp_path / "model.akit"
    path.write_bytes(packed.data)
    result = CliRunner().invoke(main, ["size-report", str(path), "--codecs", "none", "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert sum(c["bytes"] for c in document["categories"]) == path.stat().st_size
    assert document["what_if"] == [] and "needs the float weights" in result.stderr
    result = CliRunner().invoke(main, ["size-report", str(path), "--codecs", "lzma,snappy"])
    assert result.exit_code == 2 and "error: --codecs" in result.stderr


def test_read_input_reads_a_checkpoint_once(tmp_path):
    """size-report tells an artifact from a checkpoint by read_input's bytes; a checkpoint
    gets only its head there, since load_checkpoint reads the file itself."""
    checkpoint, artifact, legacy = tmp_path / "model.pt", tmp_path / "model.akit", tmp_path / "model.ptz"
    torch.save({"w": torch.randn(64, 64)}, checkpoint)
    artifact.write_bytes(pack_state_dict({"w": torch.randn(4, 4)}, codec="zlib").data)
    legacy.write_bytes(zlib.compress(b"x" * 1000))
    assert read_input(checkpoint) == checkpoint.read_bytes()[:16]
    for whole in (artifact, legacy):
        assert read_input(whole) == whole.read_bytes()


def test_check_gate_counts_loader_bytes_and_enforces_max_delta(tmp_path):
    artifact = tmp_path / "model.akit"
    packed = pack_state_dict({"w": torch.randn(4, 4)}, codec="zlib")
    artifact.write_bytes(packed.data)
    size = artifact.stat().st_size
    runner = CliRunner()

    def check(*options: str):
        result = runner.invoke(main, ["check", str(artifact), *options, "--json"])
        return result.exit_code, (json.loads(result.stdout) if result.stdout.strip() else None), result.stderr

    code, document, _ = check("--loader-bytes", "1000", "--budget", str(size + 1000))
    assert code == 0 and document["total_bytes"] == size + 1000 and document["loader_bytes"] == 1000
    code, document, _ = check("--loader-bytes", "1001", "--budget", str(size + 1000))
    assert code == 1 and document["ok"] is False

    roundtrip = tmp_path / "roundtrip.json"  # the keys 'roundtrip-eval --json' writes
    roundtrip.write_text(json.dumps({"val_bpb_fp": 2.0, "val_bpb_q": 2.004, "delta_bpb": 0.004,
                                     "artifact_bytes": size}), encoding="utf-8")
    code, document, _ = check("--roundtrip", str(roundtrip), "--max-delta", "0.005")
    assert code == 0 and document["delta_bpb"] == 0.004
    code, document, stderr = check("--roundtrip", str(roundtrip), "--max-delta", "0.003")
    assert code == 1 and "exceeds --max-delta" in stderr and document["ok"] is False
    code, _, stderr = check("--max-delta", "0.003")
    assert code == 2 and "pass both" in stderr
    roundtrip.write_text(json.dumps({"delta_bpb": 0.001, "artifact_bytes": size + 1}), encoding="utf-8")
    code, _, stderr = check("--roundtrip", str(roundtrip), "--max-delta", "0.01")
    assert code == 2 and "not this" in stderr
    roundtrip.write_text("{broken", encoding="utf-8")
    code, _, stderr = check("--roundtrip", str(roundtrip), "--max-delta", "0.01")
    assert code == 2 and "error:" in stderr and "roundtrip-eval" in stderr


def test_split_exactly_adds_up_and_follows_the_weights():
    from artifactkit.report.size import split_exactly

    assert split_exactly(10, [1, 1, 2]) in ([3, 2, 5], [2, 3, 5])
    for total, weights in ((1000, [3, 1, 0, 6]), (7, [1, 1, 1]), (0, [5, 5]), (5, [0, 0])):
        parts = split_exactly(total, weights)
        assert sum(parts) == total and all(p >= 0 for p in parts)
        if sum(weights):
            assert all(abs(p - total * w / sum(weights)) < 1 for p, w in zip(parts, weights, strict=True))
