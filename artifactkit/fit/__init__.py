"""Stage 5, fit: choose a scheme per matrix under a byte budget.

| module     | owns                                                                         |
|------------|------------------------------------------------------------------------------|
| `pipeline` | candidates (bits x clip, GPTQ), measured bytes and damage, the knapsack, verified packs |
| `record`   | the public record's pipeline as a named recipe (`RecordRecipe`): SDClip GPTQ, int7 embedding, LQER |

After `format` (candidate bytes are measured with the real codec) and `roundtrip`
(calibration builds the model from its factory); imports every earlier stage.
"""
