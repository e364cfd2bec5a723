"""CLI contracts: help for every command, JSON documents, exit codes."""

from __future__ import annotations

import json

import torch
from click.testing import CliRunner

from artifactkit.cli import main
from artifactkit.synthetic import seed_shaped_state_dict


def test_every_command_has_help():
    runner = CliRunner()
    assert main.commands, "no commands registered"
    for name, command in main.commands.items():
        if isinstance(command, type(main)):  # a group: check its subcommands too
            subcommands = list(command.commands.values())
        else:
            subcommands = [command]
        for sub in subcommands:
            assert sub.help and len(sub.help.strip()) > 40, f"{name} {sub.name} lacks a real --help text"
        result = runner.invoke(main, [name, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output


def test_pack_inspect_check_json_contracts(tmp_path):
    ckpt, art = tmp_path / "c.pt", tmp_path / "c.akit"
    torch.save(seed_shaped_state_dict(layers=2, dim=384, kv_heads=4, head_dim=64, vocab=256), ckpt)
    code = tmp_path / "train_gpt.py"
    code.write_text("print('héllo ✓')\n", encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(main, ["pack", str(ckpt), "-o", str(art), "--json", "--code", str(code)])
    assert result.exit_code == 0, result.stderr
    packed = json.loads(result.stdout)
    keys = {"format", "codec", "artifact_bytes", "payload_sha256", "policy", "tensors", "dropped"}
    assert keys <= set(packed) and packed["artifact_bytes"] == art.stat().st_size
    assert {"name", "category", "scheme", "bits", "shape", "numel"} <= set(packed["tensors"][0])
    inspected = json.loads(runner.invoke(main, ["inspect", str(art), "--json"]).stdout)
    assert keys <= set(inspected)
    assert [t["name"] for t in inspected["tensors"]] == [t["name"] for t in packed["tensors"]]
    assert inspected["payload_sha256"] == packed["payload_sha256"]

    code_bytes = len("print('héllo ✓')\n".encode())
    result = runner.invoke(main, ["check", str(art), "--code", str(code), "--json"])
    assert result.exit_code == 0
    checked = json.loads(result.stdout)
    assert checked["code_bytes"] == code_bytes and checked["ok"] is True
    assert checked["total_bytes"] == art.stat().st_size + code_bytes
    assert checked["headroom"] == 16_000_000 - checked["total_bytes"]
    budget = checked["total_bytes"] - 1
    result = runner.invoke(main, ["check", str(art), "--code", str(code), "--budget", str(budget), "--json"])
    assert result.exit_code == 1 and json.loads(result.stdout)["ok"] is False
    result = runner.invoke(main, ["check", str(art), "--code", str(code), "--budget", str(budget + 1)])
    assert result.exit_code == 0 and "code rule: raw" in result.stdout
    result = runner.invoke(main, ["check", str(tmp_path / "missing.akit")])
    assert result.exit_code == 2
    result = runner.invoke(main, ["check", str(ckpt)])
    assert result.exit_code == 2 and "not an artifact" in result.stderr


def test_bad_options_exit_2(tmp_path):
    ckpt = tmp_path / "c.pt"
    torch.save({"w": torch.ones(2)}, ckpt)
    runner = CliRunner()
    result = runner.invoke(main, ["pack", str(ckpt), "-o", str(tmp_path / "x.akit"), "--bits", "attn=banana"])
    assert result.exit_code == 2 and "error:" in result.stderr
    result = runner.invoke(main, ["pack", str(ckpt), "-o", str(tmp_path / "x.akit"), "--bits", "attn=12"])
    assert result.exit_code == 2 and "2..8" in result.stderr
    result = runner.invoke(main, ["pack", str(ckpt), "-o", str(tmp_path / "x.akit"), "--clip", "attn=std:-1"])
    assert result.exit_code == 2 and "--clip" in result.stderr


def test_usage_errors_are_one_error_line_with_exit_2(tmp_path):
    import subprocess
    import sys

    for args in (["pack", str(tmp_path / "missing.pt"), "-o", str(tmp_path / "x.akit")], ["pack"], ["nosuch"],
                 ["inspect", str(tmp_path)]):
        result = subprocess.run([sys.executable, "-m", "artifactkit", *args], capture_output=True, text=True)
        assert result.returncode == 2, args
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and "--help" in lines[0], result.stderr
        assert result.stdout == ""


# ------------------------------------------------------------------ promises of issue 14


def test_regression_budget_accepts_the_challenges_decimal_units(tmp_path):
    """Bug: `--budget 16MB` failed with click's "not a valid integer range"."""
    from artifactkit.commands._options import BYTES

    for text, expected in (("16MB", 16_000_000), ("16 MB", 16_000_000), ("16mb", 16_000_000), ("500kB", 500_000),
                           ("500KB", 500_000), ("15.5MB", 15_500_000), ("16000000", 16_000_000),
                           ("16_000_000", 16_000_000), ("16,000,000", 16_000_000), ("1234B", 1_234)):
        assert BYTES.convert(text, None, None) == expected, text
    ckpt, art = tmp_path / "c.pt", tmp_path / "c.akit"
    torch.save(seed_shaped_state_dict(layers=1, dim=128, kv_heads=2, head_dim=64, vocab=64), ckpt)
    code = tmp_path / "train_gpt.py"
    code.write_text("print(1)\n", encoding="utf-8")
    runner = CliRunner()
    assert runner.invoke(main, ["pack", str(ckpt), "-o", str(art), "--code", str(code)]).exit_code == 0
    result = runner.invoke(main, ["check", str(art), "--code", str(code), "--budget", "16MB", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["budget"] == 16_000_000
    for bad, says in (("16 megs", "not a number of bytes"), ("16MiB", "binary unit"), ("0", "too small"),
                      ("1.5B", "whole number of bytes")):
        result = runner.invoke(main, ["check", str(art), "--budget", bad])
        assert result.exit_code == 2, bad
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], result.stderr
        assert "bytes" in lines[0] and "integer range" not in lines[0]


def test_regression_check_without_code_says_it_counts_zero_code_bytes(tmp_path, monkeypatch):
    """Bug: with no --code and no ./train_gpt.py, `check` counted 0 code bytes without a word."""
    ckpt, art = tmp_path / "c.pt", tmp_path / "c.akit"
    torch.save(seed_shaped_state_dict(layers=1, dim=128, kv_heads=2, head_dim=64, vocab=64), ckpt)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(main, ["pack", str(ckpt), "-o", str(art)])
    assert result.exit_code == 0 and "counting 0 code bytes" in result.stderr
    result = runner.invoke(main, ["check", str(art), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["code_bytes"] == 0
    assert "notice: no --code given and no ./train_gpt.py" in result.stderr and "counting 0 code bytes" in result.stderr
    # The notice comes when the command ends, and not after a bad-input error: that stays one line.
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    result = runner.invoke(main, ["fit", str(garbage), "-o", str(tmp_path / "f.akit")])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    (tmp_path / "train_gpt.py").write_text("print(1)\n", encoding="utf-8")
    result = runner.invoke(main, ["check", str(art), "--json"])
    assert json.loads(result.stdout)["code_bytes"] == 9 and "counting 0 code bytes" not in result.stderr


def test_regression_bits_override_says_which_matrices_stay_fp16_and_the_label_does_not_lie(tmp_path):
    """Bug: `pack --bits attn=6,mlp=5` left the attention matrices at or below the
    small-tensor threshold in fp16 without a word, and labelled the artifact
    'int6-mixed+attn=6,mlp=5' as if every attention matrix were int6."""
    # dim 256: q / o are 256 x 256 = 65,536 elements (= the threshold) and k / v 128 x 256,
    # so every attention matrix stays fp16; the MLP matrices (768 x 256) are above it.
    ckpt, art = tmp_path / "c.pt", tmp_path / "c.akit"
    torch.save(seed_shaped_state_dict(layers=2, dim=256, kv_heads=2, head_dim=64, vocab=64), ckpt)
    result = CliRunner().invoke(main, ["pack", str(ckpt), "-o", str(art), "--bits", "attn=6,mlp=5", "--json"])
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    attn = [t for t in document["tensors"] if t["category"] == "attn"]
    mlp = [t for t in document["tensors"] if t["category"] == "mlp"]
    assert len(attn) == 8 and {t["scheme"] for t in attn} == {"fp16"} and {t["scheme"] for t in mlp} == {"int5"}
    assert ("notice: --bits attn=6,mlp=5 applies to matrices above the small-tensor threshold (65,536 elements); "
            "8 smaller matrices (8 attn) stay fp16") in result.stderr
    assert document["policy"] == "int6-mixed+attn=6,mlp=5 (matrices > 65,536 elements; 8 smaller fp16)"
    inspected = json.loads(CliRunner().invoke(main, ["inspect", str(art), "--json"]).stdout)
    assert inspected["policy"] == document["policy"]
    # Without small matrices in the overridden categories the label stays as it was (byte-identical files).
    result = CliRunner().invoke(main, ["pack", str(ckpt), "-o", str(tmp_path / "m.akit"), "--bits", "mlp=5", "--json"])
    assert json.loads(result.stdout)["policy"] == "int6-mixed+mlp=5" and "notice: --bits" not in result.stderr


def test_regression_unpack_help_says_what_each_format_restores():
    """Bug: `unpack --help` promised restored banks and original dtypes for every format,
    which a seed int6 .ptz (it records neither) cannot give."""
    text = " ".join(CliRunner().invoke(main, ["unpack", "--help"]).output.split())
    assert ".akit banks restored (unless --expanded), original dtypes" in text
    assert "baseline int8 .ptz original dtypes (recorded); the format has no banks" in text
    assert "seed int6 .ptz records neither" in text and "roundtrip-eval" in text


def test_pack_says_what_it_does_with_damaged_or_legacy_artifacts(tmp_path):
    """A damaged .akit (no AKIT header) or a legacy .ptz given to pack: an error saying what pack
    does with artifacts, not the checkpoint reader's "not a PyTorch checkpoint"."""
    import lzma

    ckpt, art = tmp_path / "c.pt", tmp_path / "good.akit"
    torch.save(seed_shaped_state_dict(layers=1, dim=128, kv_heads=2, head_dim=64, vocab=64), ckpt)
    runner = CliRunner()
    assert runner.invoke(main, ["pack", str(ckpt), "-o", str(art)]).exit_code == 0
    damaged, legacy = tmp_path / "damaged.akit", tmp_path / "old.ptz"
    damaged.write_bytes(b"\0" * 8 + art.read_bytes()[8:])
    legacy.write_bytes(lzma.compress(b"a legacy payload"))
    for path, says in ((damaged, "named .akit but has no artifactkit header"),
                       (legacy, "looks like a legacy compressed artifact")):
        result = runner.invoke(main, ["pack", str(path), "-o", str(tmp_path / "x.akit")])
        assert result.exit_code == 2 and says in result.stderr and "Traceback" not in result.output
        assert result.stderr.startswith(f"error: {path}:") and len(result.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "x.akit").exists()
    truncated_zip = tmp_path / "ckpt-named.akit"  # a damaged torch zip named .akit keeps the reader's own cause
    truncated_zip.write_bytes(ckpt.read_bytes()[:200])
    result = runner.invoke(main, ["pack", str(truncated_zip), "-o", str(tmp_path / "x.akit")])
    assert result.exit_code == 2 and "named .akit" not in result.stderr and str(truncated_zip) in result.stderr
    ckpt.write_bytes(b"junk" * 10)  # a plain non-checkpoint keeps the reader's own message
    result = runner.invoke(main, ["pack", str(ckpt), "-o", str(tmp_path / "x.akit")])
    assert result.exit_code == 2 and "not a PyTorch checkpoint" in result.stderr


def test_pack_re_encodes_an_akit_input_without_changing_a_weight(tmp_path):
    """An artifact from an older coder (here: zlib) gets the current one; every tensor, the
    policy and the meta stay exactly as stored; quantization options are refused."""
    from artifactkit.format.reader import read_artifact

    ckpt, old, new = tmp_path / "c.pt", tmp_path / "old.akit", tmp_path / "new.akit"
    torch.save(seed_shaped_state_dict(layers=2, dim=384, kv_heads=4, head_dim=64, vocab=256), ckpt)
    runner = CliRunner()
    assert runner.invoke(main, ["pack", str(ckpt), "-o", str(old), "--codec", "zlib", "--bits", "mlp=5"]).exit_code == 0
    result = runner.invoke(main, ["pack", str(old), "-o", str(new), "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["artifact_bytes"] == new.stat().st_size < 0.97 * old.stat().st_size
    before, after = read_artifact(old), read_artifact(new)
    assert {s["name"]: s["codec"] for s in after.header["sections"]}["codes"] == "ans"
    assert after.header["policy"] == before.header["policy"] and after.header["meta"] == before.header["meta"]
    restored_before, restored_after = before.state_dict(), after.state_dict()
    assert list(restored_after) == list(restored_before)
    assert all(torch.equal(restored_after[name], tensor) for name, tensor in restored_before.items())
    for options in (["--policy", "int8"], ["--bits", "mlp=6"], ["--recipe", "record"]):
        result = runner.invoke(main, ["pack", str(old), "-o", str(tmp_path / "x.akit"), *options])
        assert result.exit_code == 2 and "cannot be used with an .akit input" in result.stderr
        assert not (tmp_path / "x.akit").exists()
