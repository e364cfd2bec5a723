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
