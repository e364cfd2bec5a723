"""eval: shard I/O, tokenizer byte tables and val_bpb exactly as the challenge defines
it. Imports neither `artifactkit` nor `train`."""
