"""Stage 2, quantize: turn float tensors into what the plan says will be stored.

| module        | owns                                                                    |
|---------------|-------------------------------------------------------------------------|
| `intn`        | per-row symmetric intN: clip rules applied, rounding, dequantization     |
| `gptq`        | GPTQ error feedback against layer Hessians, and the Hessian collector    |
| `lqer`        | LQER: a quantized low-rank correction of a matrix's quantization error   |
| `calibration` | calibration tokens: training shards or text the model samples itself    |
| `apply`       | a policy applied to a whole state dict -> `QuantizedModel`               |

Imports the foundation and `plan`.
"""
