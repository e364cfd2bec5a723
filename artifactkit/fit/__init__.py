"""Stage 5, fit: choose a scheme per matrix under a byte budget.

| module     | owns                                                                         |
|------------|------------------------------------------------------------------------------|
| `candidates` | every way to store one matrix (policy, bits x clip, SDClip steps, fp16, LQER): bytes measured, damage per role |
| `sensitivity` | calibration (Hessians, lookup counts) and the per-role output KL that scales damage to nats |
| `knapsack` | the multiple-choice knapsack and the greedy steps that spend the last bytes |
| `pipeline` | the `fit` steps: calibrate, build groups, scale damage, solve, verify with real packs |
| `record` | the public record's pipeline as a named recipe (`RecordRecipe`): SDClip GPTQ, int7 embedding, LQER |

After `format` (candidate bytes are measured with the real codec) and `roundtrip`
(calibration builds the model from its factory); imports every earlier stage.
"""
