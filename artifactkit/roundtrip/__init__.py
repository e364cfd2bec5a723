"""Stage 4, roundtrip: what quantization costs in val_bpb.

| module          | owns                                                                 |
|-----------------|----------------------------------------------------------------------|
| `model_factory` | `module:function` + config -> nn.Module (ours or a user's model)      |
| `packing`       | a checkpoint packed exactly as `pack` writes it (meta, honest label) |
| `evaluate`      | float vs dequantized val_bpb on identical tokens (`roundtrip-eval`),  |
|                 | legacy `.ptz` artifacts with the checkpoint as template               |

Distinct from the top-level `eval` package (shards, byte tables, val_bpb), which it
uses. Imports the foundation, `plan`, `quantize`, `format` and `eval`.
"""
