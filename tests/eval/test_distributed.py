"""Under torchrun the windows are split across ranks and the float64 sums all-reduced:
two CPU ranks (gloo) must reproduce the single-process result exactly in counts."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from eval.bpb import build_byte_tables
from eval.evaluate import evaluate_bpb
from eval.shards import write_shard

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

WORKER = textwrap.dedent(
    """
    import importlib.util, json, sys
    import sentencepiece, torch, torch.distributed as dist
    from eval.bpb import build_byte_tables
    from eval.evaluate import evaluate_bpb
    from eval.shards import load_tokens

    tiny_path, shard, tokenizer, out = sys.argv[1:5]
    spec = importlib.util.spec_from_file_location("tiny_lm", tiny_path)
    tiny_lm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tiny_lm)
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    model = tiny_lm.TinyCausalLM(vocab_size=1024, dim=32, heads=2, max_seq_len=32)
    tables = build_byte_tables(sentencepiece.SentencePieceProcessor(model_file=tokenizer))
    results = [evaluate_bpb(model, load_tokens(shard), tables, seq_len=32, stride=stride, batch_tokens=64).to_dict()
               for stride in (None, 10)]
    if dist.get_rank() == 0:
        with open(out, "w") as handle:
            json.dump(results, handle)
    dist.destroy_process_group()
    """
)


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch build has no torch.distributed")
def test_two_ranks_reproduce_single_process(tmp_path, tiny_lm, corpus_tokenizer, corpus_text):
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(corpus_tokenizer))
    tokens = np.asarray([1, *sp.encode(corpus_text[:12_000])], dtype=np.uint16)
    shard = write_shard(tmp_path / "val_000000.bin", tokens)
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    tables = build_byte_tables(sp)
    out = tmp_path / "rank0.json"
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(worker), str(HERE / "tiny_lm.py"), str(shard), str(corpus_tokenizer), str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    torch.manual_seed(0)
    model = tiny_lm.TinyCausalLM(vocab_size=1024, dim=32, heads=2, max_seq_len=32)
    for distributed, stride in zip(json.loads(out.read_text()), (None, 10), strict=True):
        single = evaluate_bpb(model, tokens, tables, seq_len=32, stride=stride)
        assert distributed["mode"] == single.mode
        assert (distributed["tokens"], distributed["bytes"]) == (single.tokens, single.bytes)
        assert distributed["nll_sum"] == pytest.approx(single.nll_sum, rel=1e-6)
        assert distributed["val_bpb"] == pytest.approx(single.val_bpb, rel=1e-6)
