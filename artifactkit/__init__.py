"""artifactkit: classify, quantize, pack, size and roundtrip-evaluate model checkpoints
under a hard artifact budget (counted code bytes + compressed weights).

The pipeline, one subpackage per stage; a stage imports only the foundation and the
stages before it (`tests/artifactkit/test_layout.py` enforces this):

    plan  ->  quantize  ->  format  ->  roundtrip  ->  fit  ->  report
    rules,    intN, GPTQ,    .akit,      model          bits/clip    size, A/B,
    banks,    calibration,   codecs,     factory,       knapsack     plots
    classify, policy         ANS, legacy, roundtrip-eval under a
    schemes   applied        loader                     budget

Foundation (any stage may import): `errors` (exception types and the message style),
`io` (atomic writes, the output-is-an-input guard), `checkpoint` (loading any
checkpoint safely), `budget` (code bytes and the budget line), `table` (text tables),
`synthetic` (seed-shaped state dicts for tests and benchmarks).
The command line (`cli`, `commands/`) sits on top and may import everything.
Below all of it is the top-level `eval` package (shards, byte tables, val_bpb, device
and torchrun helpers), which `train` uses too; `artifactkit` never imports `train`.
"""

__version__ = "0.1.0"
