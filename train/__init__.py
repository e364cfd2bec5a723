"""train: the reference trainer that produces artifactkit's checkpoints.

`model` (context-encoder GPT, `build_model`), `jepa` (training-only self-distillation
head), `optim` (Muon + AdamW, schedules), `loop` (the run), `checkpoint` (project
format + resumable state), `data` / `corpus` (shards, tokenizer, embedded corpus),
`config` (typed options and presets), `demo` (the README demo), `testing` (helpers).
May import `eval`; `artifactkit` never imports `train`.
"""
