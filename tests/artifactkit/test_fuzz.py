"""Hostile and careless input (issue 15): ~500 seeded cases from the fuzz campaign's own
families (`bench/fuzz.py`), run in-process, each held to the contract -- exit 2, one
`error:` line, no traceback or library warning, nothing written, the input untouched,
no pickle payload executed (the exported loader: a ValueError). The long campaign with
per-case peak memory and time is `python bench/fuzz.py` (reports/fuzz.md). After the
families, one named regression test per `unexpected ...` error the issue found."""

from __future__ import annotations

import importlib.util
import pickle
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import sentencepiece
import torch
from click.testing import CliRunner

from artifactkit.cli import main
from eval.shards import write_shard

BENCH = Path(__file__).resolve().parents[2] / "bench" / "fuzz.py"
CI_FAMILIES = ("pickle", "flip", "truncate", "header", "bomb", "dtype", "misuse")
# Fewer would mean a family generator silently stopped producing cases.
MINIMUM_CASES = {"pickle": 30, "flip": 50, "truncate": 40, "header": 100, "bomb": 50, "dtype": 80, "misuse": 60}


def _load_fuzz():
    spec = importlib.util.spec_from_file_location("akit_bench_fuzz", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


fuzz = _load_fuzz()


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    return fuzz.build_cases(tmp_path_factory.mktemp("fuzz"), seed=15, scale=1, tokenizer=fuzz.find_tokenizer(),
                            quick=True)


@pytest.mark.parametrize("family", CI_FAMILIES)
def test_every_hostile_case_meets_the_contract(campaign, family):
    chosen = [case for case in campaign if case.family == family]
    assert len(chosen) >= MINIMUM_CASES[family], (family, len(chosen))
    failures = []
    for case in chosen:
        before = fuzz.file_state(case.inputs)
        outcome = fuzz.run_in_process(case)
        problems = fuzz.judge(case, outcome, before)
        if problems:
            failures.append(f"{case.name}: {'; '.join(problems)}")
    assert not failures, "\n".join(failures[:20])


def test_the_judge_sees_a_broken_contract(tmp_path):
    """The contract check itself: a traceback, a second error line, a written output, a
    changed input and an executed payload are each reported."""
    source = tmp_path / "in.akit"
    source.write_bytes(b"x")
    out = tmp_path / "out"
    out.mkdir()
    case = fuzz.Case("header", "self-test", ["inspect", str(source)], [str(source)], str(out),
                     marker=str(tmp_path / "PWNED"))
    before = fuzz.file_state(case.inputs)
    clean = fuzz.Outcome(2, "", "error: in.akit: bad\n")
    assert fuzz.judge(case, clean, before) == []
    (out / "partial.tmp").write_bytes(b"")
    source.write_bytes(b"y")
    (tmp_path / "PWNED").mkdir()
    broken = fuzz.Outcome(1, "", "Traceback (most recent call last):\nerror: one\nerror: two\n")
    problems = " | ".join(fuzz.judge(case, broken, before))
    for expected in ("PICKLE PAYLOAD EXECUTED", "traceback", "exit 1", "error lines", "wrote", "changed"):
        assert expected in problems, (expected, problems)


def test_hostile_pickles_reach_the_unpickler_and_are_refused(campaign):
    """The pickle family is not refused early by accident: most cases get as far as
    torch's weights_only unpickler, which names what it refused."""
    reached = Counter()
    for case in (c for c in campaign if c.family == "pickle"):
        outcome = fuzz.run_in_process(case)
        reached["weights_only" in outcome.stderr] += 1
        assert not Path(case.marker or "/nonexistent").exists()
    assert reached[True] >= 15, reached


# -- named regressions: each `error: unexpected ...` of issue 15 is now a cause and a fix


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_header_nested_200k_deep_is_a_named_cause(tmp_path):
    version, header, payload = fuzz.header_of(fuzz.pack_state_dict(fuzz.base_state(), codec="zlib").data)
    text = '{"format":"akit/1","tensors":' + "[" * 200_000 + "]" * 200_000 + "}"
    path = tmp_path / "deep.akit"
    path.write_bytes(fuzz.assemble(version, None, payload, text=text))
    result = run("inspect", str(path))
    assert result.exit_code == 2 and "nests deeper than any artifact header" in result.stderr
    assert "unexpected" not in result.stderr and result.stderr.count("\n") == 1


@pytest.mark.parametrize(("content", "message"), [
    ("exact = 5\n", "'exact' is a number, not a table"),
    ("rule = 5\n", "'rule' is a number, not an array of tables"),
    ('[[rule]]\nregex = 5\ncategory = "attn"\n', "'regex' is a number, not a string"),
    ('[exact]\n"b.0.a.q" = 5\n', "the category is a number, not a string"),
    ("a = " + "[" * 50_000 + "]" * 50_000 + "\n", "nest deeper than TOML can be parsed"),
])
def test_rules_file_with_exact_5_is_a_named_cause(tmp_path, content, message):
    rules = tmp_path / "rules.toml"
    rules.write_text(content)
    checkpoint = tmp_path / "c.pt"
    torch.save({"b.0.a.q": torch.randn(8, 8)}, checkpoint)
    result = run("classify", str(checkpoint), "--rules", str(rules))
    assert result.exit_code == 2 and message in result.stderr and "unexpected" not in result.stderr, result.stderr


def test_token_ids_past_the_vocabulary_in_audit_tokenizer_val_are_a_named_cause(tmp_path):
    text = "the quick brown fox jumps over the lazy dog, again and again.\n" * 200
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(text.splitlines()),
                                             model_prefix=str(tmp_path / "tiny"), vocab_size=64,
                                             hard_vocab_limit=False, minloglevel=2)
    shard = tmp_path / "val_000.bin"
    write_shard(shard, np.array([1, 5, 7, 900, 40_000, 3], dtype=np.uint16))
    result = run("audit-tokenizer", str(tmp_path / "tiny.model"), "--val", str(shard))
    assert result.exit_code == 2 and "outside the tokenizer's" in result.stderr
    assert "largest 40,000" in result.stderr and "another tokenizer" in result.stderr and "unexpected" not in result.stderr


def test_nan_small_threshold_in_a_header_policy_is_a_named_cause(tmp_path):
    version, header, payload = fuzz.header_of(fuzz.pack_state_dict(fuzz.base_state(), codec="zlib").data)
    header["policy"]["small_threshold"] = float("nan")
    path = tmp_path / "nan.akit"
    path.write_bytes(fuzz.assemble(version, header, payload))
    result = run("check", str(path))
    assert result.exit_code == 2 and "not a JSON number" in result.stderr and "unexpected" not in result.stderr
    assert run("fit", str(path), "-o", str(tmp_path / "f.akit"), "--small-threshold", "nan").exit_code == 2


def test_old_protocol_pickle_prints_no_torch_warning_before_the_error(tmp_path):
    """A fresh process (pytest would swallow the warning in-process): stderr is exactly
    the one error line, naming what the unpickler refused."""
    checkpoint = tmp_path / "old.pt"
    checkpoint.write_bytes(pickle.dumps(fuzz.Payload(str(tmp_path / "PWNED")), protocol=5))
    result = subprocess.run([sys.executable, "-m", "artifactkit", "pack", str(checkpoint), "-o", str(tmp_path / "o")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert "Warning" not in result.stderr and "weights_only" in result.stderr
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "o").exists()
