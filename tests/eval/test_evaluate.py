"""evaluate_bpb: window coverage, sliding vs standard, batching invariance, the uniform
model's exact score, and agreement with a plain one-forward-per-window loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as functional
from hypothesis import given, settings
from hypothesis import strategies as st

from eval.bpb import build_byte_tables, count_bytes, stream_byte_count
from eval.evaluate import EvalError, evaluate_bpb, plan_windows

SEQ_LEN = 32


@pytest.fixture(scope="module")
def tables(fallback_tokenizer):
    return build_byte_tables(fallback_tokenizer)


def make_stream(sp, text: str) -> np.ndarray:
    stream: list[int] = []
    for paragraph in (p for p in text.split("\n\n") if p.strip()):
        stream += [1, *sp.encode(paragraph)]
    return np.asarray(stream, dtype=np.uint16)


@pytest.fixture(scope="module")
def stream(fallback_tokenizer, corpus_text, multilingual_text) -> np.ndarray:
    # Text the tokenizer was not trained on, plus byte-fallback-heavy multilingual text.
    return make_stream(fallback_tokenizer, corpus_text[200_000:215_000] + "\n\n" + multilingual_text)


@pytest.fixture(scope="module")
def tiny_model(tiny_lm):
    torch.manual_seed(0)
    return tiny_lm.TinyCausalLM(vocab_size=1024, dim=32, heads=2, max_seq_len=SEQ_LEN)


def reference_loop(model, tokens: np.ndarray, tables, seq_len: int, stride: int | None):
    """One forward per window, written without the planner: returns (nll_sum, targets, bytes)."""
    tokens = torch.from_numpy(tokens.astype(np.int64))
    total_targets = len(tokens) - 1
    nll_sum, targets, byte_count = 0.0, 0, 0
    scored_until = 0  # targets [0, scored_until) are done
    start = 0
    step = seq_len if stride is None else stride
    while True:
        end = start + seq_len
        if stride is None and end > total_targets:
            break
        end = min(end, total_targets)
        inputs, labels = tokens[start:end], tokens[start + 1 : end + 1]
        with torch.no_grad():
            logits = model(inputs[None])[0]
        nll = functional.cross_entropy(logits.float(), labels, reduction="none").double()
        first = scored_until - start
        nll_sum += float(nll[first:].sum())
        targets += end - scored_until
        byte_count += int(count_bytes(tables, inputs[first:].numpy(), labels[first:].numpy()).sum())
        scored_until = end
        if end == total_targets:
            break
        start += step
    return nll_sum, targets, byte_count


@settings(max_examples=200, deadline=None)
@given(
    num_tokens=st.integers(min_value=2, max_value=400),
    seq_len=st.integers(min_value=1, max_value=64),
    data=st.data(),
)
def test_sliding_plan_scores_every_target_exactly_once(num_tokens, seq_len, data):
    stride = data.draw(st.integers(min_value=1, max_value=seq_len))
    plan = plan_windows(num_tokens, seq_len, stride)
    hits = np.zeros(num_tokens - 1, dtype=np.int64)
    for start, length, first in zip(plan.starts, plan.lengths, plan.score_from, strict=True):
        assert 1 <= length <= seq_len and 0 <= first < length
        assert start % stride == 0
        hits[start + first : start + length] += 1
    assert (hits == 1).all()
    assert plan.scored_targets == num_tokens - 1


@settings(max_examples=100, deadline=None)
@given(num_tokens=st.integers(min_value=2, max_value=400), seq_len=st.integers(min_value=1, max_value=64))
def test_standard_plan_covers_the_truncated_prefix(num_tokens, seq_len):
    if num_tokens - 1 < seq_len:
        with pytest.raises(EvalError, match="fewer than one window"):
            plan_windows(num_tokens, seq_len)
        return
    plan = plan_windows(num_tokens, seq_len)
    used = (num_tokens - 1) // seq_len * seq_len
    assert plan.scored_targets == used
    np.testing.assert_array_equal(plan.starts, np.arange(0, used, seq_len))
    assert (plan.score_from == 0).all() and (plan.lengths == seq_len).all()


def test_standard_matches_plain_reference_loop(tiny_model, stream, tables):
    result = evaluate_bpb(tiny_model, stream, tables, seq_len=SEQ_LEN, batch_tokens=8 * SEQ_LEN)
    nll_sum, targets, byte_count = reference_loop(tiny_model, stream, tables, SEQ_LEN, None)
    assert result.mode == "standard"
    assert (result.tokens, result.bytes) == (targets, byte_count)
    assert result.tokens == (len(stream) - 1) // SEQ_LEN * SEQ_LEN
    assert result.nll_sum == pytest.approx(nll_sum, rel=1e-6)
    assert result.val_bpb == pytest.approx(nll_sum / math.log(2) / byte_count, rel=1e-6)
    assert result.val_loss == pytest.approx(nll_sum / targets, rel=1e-6)


@pytest.mark.parametrize("stride", [1, 5, 16, 31])
def test_sliding_matches_plain_reference_loop_including_final_partial_window(tiny_model, stream, tables, stride):
    tokens = stream[: 20 * SEQ_LEN + 7]  # the last window is shorter than seq_len
    result = evaluate_bpb(tiny_model, tokens, tables, seq_len=SEQ_LEN, stride=stride, batch_tokens=4096)
    nll_sum, targets, byte_count = reference_loop(tiny_model, tokens, tables, SEQ_LEN, stride)
    assert result.mode == "sliding"
    assert result.tokens == targets == len(tokens) - 1
    assert result.bytes == byte_count == stream_byte_count(tables, tokens)
    assert result.nll_sum == pytest.approx(nll_sum, rel=1e-6)


def test_sliding_with_stride_equal_to_seq_len_equals_standard(tiny_model, stream, tables):
    tokens = stream[: 40 * SEQ_LEN + 1]  # N - 1 divisible by seq_len: same targets
    standard = evaluate_bpb(tiny_model, tokens, tables, seq_len=SEQ_LEN)
    sliding = evaluate_bpb(tiny_model, tokens, tables, seq_len=SEQ_LEN, stride=SEQ_LEN)
    assert (sliding.tokens, sliding.bytes, sliding.windows) == (standard.tokens, standard.bytes, standard.windows)
    assert sliding.val_bpb == pytest.approx(standard.val_bpb, rel=1e-9)
    assert sliding.val_loss == pytest.approx(standard.val_loss, rel=1e-9)


def test_smaller_stride_gives_more_context_and_a_different_score(tiny_model, stream, tables):
    tokens = stream[: 40 * SEQ_LEN + 1]
    standard = evaluate_bpb(tiny_model, tokens, tables, seq_len=SEQ_LEN)
    sliding = evaluate_bpb(tiny_model, tokens, tables, seq_len=SEQ_LEN, stride=8)
    assert sliding.tokens == standard.tokens
    assert sliding.nll_sum != pytest.approx(standard.nll_sum, rel=1e-6)


def test_context_free_model_scores_every_target_once_in_any_layout(tiny_lm, stream, tables):
    """A bigram model's per-target nll ignores context, so every layout must reproduce the
    nll of all N-1 targets from one direct pass; a double-scored target would show."""
    torch.manual_seed(1)
    model = tiny_lm.BigramLM(vocab_size=1024)
    tokens = stream[: 10 * SEQ_LEN + 13]
    everything = torch.from_numpy(tokens.astype(np.int64))
    with torch.no_grad():
        direct = functional.cross_entropy(model(everything[None, :-1])[0], everything[1:], reduction="none")
    for stride in (1, 3, 7, SEQ_LEN):
        result = evaluate_bpb(model, tokens, tables, seq_len=SEQ_LEN, stride=stride)
        assert result.tokens == len(tokens) - 1
        assert result.nll_sum == pytest.approx(float(direct.double().sum()), rel=1e-9)


def test_uniform_logits_score_exactly_log2_vocab_times_tokens_over_bytes(tiny_lm, stream, tables):
    model = tiny_lm.UniformLM(vocab_size=1024)
    for stride in (None, 9):
        result = evaluate_bpb(model, stream, tables, seq_len=SEQ_LEN, stride=stride)
        assert result.val_loss == pytest.approx(math.log(1024), rel=1e-6)
        assert result.val_bpb == pytest.approx(math.log2(1024) * result.tokens / result.bytes, rel=1e-6)


def test_batch_size_does_not_change_the_result(tiny_model, stream, tables):
    results = [
        evaluate_bpb(tiny_model, stream, tables, seq_len=SEQ_LEN, stride=12, batch_tokens=batch_tokens)
        for batch_tokens in (1, 3 * SEQ_LEN, 1 << 20)
    ]
    assert len({(r.tokens, r.bytes) for r in results}) == 1
    for result in results[1:]:
        assert result.nll_sum == pytest.approx(results[0].nll_sum, rel=1e-6)


def test_max_tokens_limits_the_scored_targets(tiny_model, stream, tables):
    standard = evaluate_bpb(tiny_model, stream, tables, seq_len=SEQ_LEN, max_tokens=5 * SEQ_LEN + 3)
    assert standard.tokens == 5 * SEQ_LEN
    sliding = evaluate_bpb(tiny_model, stream, tables, seq_len=SEQ_LEN, stride=8, max_tokens=100)
    assert sliding.tokens == 100
    assert sliding.bytes == stream_byte_count(tables, stream[:101])


def test_model_training_flag_is_restored(tiny_model, stream, tables):
    tiny_model.train()
    evaluate_bpb(tiny_model, stream[: 2 * SEQ_LEN + 1], tables, seq_len=SEQ_LEN)
    assert tiny_model.training
    tiny_model.eval()


def test_progress_line_goes_to_stderr(tiny_model, stream, tables, capsys):
    evaluate_bpb(tiny_model, stream[: 4 * SEQ_LEN + 1], tables, seq_len=SEQ_LEN, progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "4/4 windows" in captured.err and "tok/s" in captured.err


def test_errors_are_clear(tiny_lm, tiny_model, stream, tables):
    with pytest.raises(EvalError, match="fewer than one window"):
        evaluate_bpb(tiny_model, stream[:SEQ_LEN], tables, seq_len=SEQ_LEN)
    with pytest.raises(EvalError, match=r"stride is 33; it must lie in \[1, seq_len=32\]"):
        evaluate_bpb(tiny_model, stream, tables, seq_len=SEQ_LEN, stride=33)
    with pytest.raises(EvalError, match="byte tables cover 1,024 ids"):
        evaluate_bpb(tiny_model, np.array([1, 5, 2000, 7] * 20), tables, seq_len=SEQ_LEN)
    small = tiny_lm.UniformLM(vocab_size=100)
    with pytest.raises(EvalError, match="model vocabulary 100 is smaller than token id"):
        evaluate_bpb(small, stream, tables, seq_len=SEQ_LEN)
    with pytest.raises(EvalError, match="1-D integer array"):
        evaluate_bpb(tiny_model, np.zeros((2, 40), dtype=np.int64), tables, seq_len=SEQ_LEN)


def test_all_control_targets_count_no_bytes_error(tiny_model, tables):
    with pytest.raises(EvalError, match="count 0 bytes"):
        evaluate_bpb(tiny_model, np.ones(2 * SEQ_LEN + 1, dtype=np.int64), tables, seq_len=SEQ_LEN)
