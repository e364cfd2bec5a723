"""The CLI keeps its promises for every command, not only the ones someone remembered:
walk every command (and every group's subcommand) and check `--help`, `--json` (one
JSON document on stdout), `--debug` (a traceback with it, none without, on an induced
error) and a missing input file (one `error:` line, exit 2); check that shared options
have one help text and one default everywhere. The README half (every command and
option it shows exists) is `test_readme_cli.py`.

A new command fails `test_every_command_has_a_case` until it gets a row in CASES.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import click
import numpy as np
import pytest
import sentencepiece
import torch
from click.testing import CliRunner

from artifactkit.cli import main
from artifactkit.format.akit import pack_state_dict, write_artifact
from eval.shards import write_shard

TINY_LM = Path(__file__).resolve().parents[1] / "eval" / "tiny_lm.py"
# Matrices of 320 x 320 = 102,400 elements: above the small-tensor threshold, so they are quantized.
CONFIG = {"vocab_size": 1024, "dim": 320, "heads": 2, "layers": 1, "max_seq_len": 32, "seq_len": 32}


def walk(group: click.Group = main, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    """Every runnable command as (path, command), e.g. (("report", "ab"), ...)."""
    found = []
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found += walk(command, (*prefix, name))
        else:
            found.append(((*prefix, name), command))
    return found


COMMANDS = walk()


@pytest.fixture(scope="module")
def root(tmp_path_factory, corpus_tokenizer, corpus_text) -> Path:
    """Real small inputs for every command: a checkpoint of a tiny model (factory
    tiny_lm:build, importable from this folder), its artifact, validation shards made
    with a tokenizer trained on the embedded corpus, two training logs, a submission
    folder, a code file, and a garbage file that is none of these."""
    root = tmp_path_factory.mktemp("cli_uniform")
    shutil.copy(TINY_LM, root / "tiny_lm.py")
    shutil.copy(corpus_tokenizer, root / "tokenizer.model")
    sp = sentencepiece.SentencePieceProcessor(model_file=str(corpus_tokenizer))
    ids: list[int] = []
    for paragraph in (p for p in corpus_text[-20_000:].split("\n\n") if p.strip()):
        ids += [1, *sp.encode(paragraph)]
    write_shard(root / "val_000000.bin", np.asarray(ids))

    import importlib.util

    spec = importlib.util.spec_from_file_location("tiny_lm_for_cli_uniform", TINY_LM)
    tiny_lm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny_lm)
    torch.manual_seed(0)
    state = {name: tensor.detach().clone() for name, tensor in tiny_lm.build(CONFIG).state_dict().items()}
    import hashlib

    torch.save({"format": "artifactkit-checkpoint/1", "state_dict": state, "config": CONFIG, "arch": "tiny_lm:build",
                "step": 0, "metrics": {}, "tokenizer_sha256": hashlib.sha256(corpus_tokenizer.read_bytes()).hexdigest()},
               root / "ckpt.pt")
    torch.save(state, root / "raw.pt")
    write_artifact(root / "model.akit", pack_state_dict(state))
    (root / "code.py").write_text("print('the submission')\n", encoding="utf-8")
    for name, loss in (("a.jsonl", 6.0), ("b.jsonl", 5.9)):
        rows = [{"step": step, "loss": loss - 0.1 * step, "elapsed_s": 1.0 * step, "step_ms": 1000.0}
                for step in range(1, 5)]
        rows[-1].update(val_loss=5.0, val_bpb=2.5, final=True, weights="raw")
        (root / name).write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    submission = root / "submission"
    submission.mkdir()
    (submission / "train_gpt.py").write_text("print('train')\n", encoding="utf-8")
    (submission / "train_seed1.log").write_text("seed:1\nfinal val_loss:2.0 val_bpb:1.2\n", encoding="utf-8")
    (root / "garbage.bin").write_bytes(b"neither a checkpoint, an artifact, a tokenizer nor a log \x00\x01")
    (root / "empty_folder").mkdir()
    return root


@pytest.fixture(autouse=True)
def in_root(root, monkeypatch):
    monkeypatch.chdir(root)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model; a second thread only spin-waits on a busy 2-core machine
    yield
    torch.set_num_threads(previous)


EVAL = ("--val", "val_*.bin", "--tokenizer", "tokenizer.model")

# Per command: arguments that succeed with --json; with BAD, the same command on an input
# that exists but is no such file (an induced error); with MISSING, on one that does not exist.
Case = Callable[[str], list[str]]
CASES: dict[tuple[str, ...], Case] = {
    ("audit",): lambda f: [f],
    ("audit-tokenizer",): lambda f: [f],
    ("check",): lambda f: [f, "--code", "code.py"],
    ("classify",): lambda f: [f],
    ("export-loader",): lambda f: ["--artifact", f, "-o", "loader.py"],
    ("fit",): lambda f: [f, "-o", "fit.akit", "--code", "code.py", "--clip-choices", "percentile"],
    ("inspect",): lambda f: [f],
    ("pack",): lambda f: [f, "-o", "packed.akit", "--code", "code.py"],
    ("report", "ab"): lambda f: [f, "b.jsonl", "-o", "reports/ab"],
    ("roundtrip-eval",): lambda f: [f, "--artifact", "model.akit", *EVAL, "--max-tokens", "64"],
    ("size-report",): lambda f: [f, "--code", "code.py", "--codecs", "none", "--no-what-if"],
    ("unpack",): lambda f: [f, "-o", "state.pt"],
}
GOOD_INPUT = {("audit",): "submission", ("audit-tokenizer",): "tokenizer.model", ("check",): "model.akit",
              ("classify",): "ckpt.pt", ("export-loader",): "model.akit", ("fit",): "raw.pt", ("inspect",): "model.akit",
              ("pack",): "ckpt.pt", ("report", "ab"): "a.jsonl", ("roundtrip-eval",): "ckpt.pt",
              ("size-report",): "ckpt.pt", ("unpack",): "model.akit"}
BAD_INPUT = {("audit",): "empty_folder"}  # a folder command: a folder without logs


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def ids(paths: list[tuple[str, ...]]) -> list[str]:
    return [" ".join(path) for path in paths]


def test_every_command_has_a_case():
    assert {path for path, _ in COMMANDS} == set(CASES) == set(GOOD_INPUT)


@pytest.mark.parametrize("path", [path for path, _ in COMMANDS], ids=ids([path for path, _ in COMMANDS]))
def test_help(path):
    result = invoke(*path, "--help")
    assert result.exit_code == 0 and result.output.startswith("Usage: ")
    for option in ("--json", "--debug", "--help"):
        assert option in result.output, f"{' '.join(path)} lacks {option}"


@pytest.mark.parametrize("path", list(CASES), ids=ids(list(CASES)))
def test_json_is_one_document_on_stdout(path):
    result = invoke(*path, *CASES[path](GOOD_INPUT[path]), "--json")
    assert result.exit_code in (0, 1), result.stderr  # audit of a one-seed folder reports problems: exit 1
    document = json.loads(result.stdout)  # the whole of stdout is one JSON document
    assert isinstance(document, dict) and document


@pytest.mark.parametrize("path", list(CASES), ids=ids(list(CASES)))
def test_debug_shows_the_traceback_of_an_induced_error(path):
    bad = BAD_INPUT.get(path, "garbage.bin")
    plain = invoke(*path, *CASES[path](bad))
    assert plain.exit_code == 2, plain.stderr
    assert plain.stderr.startswith("error: ") and len(plain.stderr.strip().splitlines()) == 1, plain.stderr
    assert "Traceback" not in plain.stderr
    debug = invoke(*path, *CASES[path](bad), "--debug")
    assert debug.exit_code == 2
    assert "Traceback (most recent call last)" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == plain.stderr.strip()


@pytest.mark.parametrize("path", list(CASES), ids=ids(list(CASES)))
def test_missing_input_file_is_one_error_line_exit_2(path):
    result = invoke(*path, *CASES[path]("no_such_input"))
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "no_such_input" in lines[0], result.stderr
    assert result.stdout == ""


def test_regression_roundtrip_eval_and_audit_tokenizer_accept_debug():
    """Bug: both commands declared their own --json and no --debug, so `--debug` after
    the command name was 'no such option'."""
    for path in (("roundtrip-eval",), ("audit-tokenizer",)):
        result = invoke(*path, *CASES[path]("garbage.bin"), "--debug")
        assert "no such option" not in result.stderr.lower() and "Traceback" in result.stderr


# ------------------------------------------------------------------ one option, one meaning

SHARED_OPTIONS = ("--json", "--debug", "--progress", "--codec", "--device", "--budget", "--code", "--code-rule",
                  "--rules", "--policy", "--bits", "--bits-for", "--clip", "--loader-bytes", "--output")


def _options(command: click.Command) -> dict[str, click.Option]:
    return {name: param for param in command.params if isinstance(param, click.Option)
            for name in param.opts if name.startswith("--")}


@pytest.mark.parametrize("option", SHARED_OPTIONS)
def test_a_shared_option_has_one_help_default_and_type_everywhere(option):
    seen = {" ".join(path): _options(command)[option] for path, command in COMMANDS if option in _options(command)}
    assert seen, f"no command has {option}"
    if option == "--output":  # what is written differs; how it is named and said does not
        for where, param in seen.items():
            assert param.opts == ["-o", "--output"] and param.help.startswith("Where to write "), where
        return
    helps = {(param.help, repr(param.default), type(param.type).__name__) for param in seen.values()}
    assert len(helps) == 1, f"{option} differs between {', '.join(seen)}: {helps}"


def test_device_defaults_to_cpu_in_every_command():
    defaults = {" ".join(path): _options(command)["--device"].default for path, command in COMMANDS
                if "--device" in _options(command)}
    assert set(defaults) >= {"fit", "roundtrip-eval"} and set(defaults.values()) == {"cpu"}


def test_positional_inputs_use_one_vocabulary():
    vocabulary = {"CHECKPOINT", "ARTIFACT", "CHECKPOINT|ARTIFACT", "TOKENIZER", "LOG_A", "LOG_B", "DIR"}
    for path, command in COMMANDS:
        for param in command.params:
            if isinstance(param, click.Argument):
                assert param.make_metavar(click.Context(command)) in vocabulary, (path, param.name)
