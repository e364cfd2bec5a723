"""Stage 6, report: what a person reads.

| module   | owns                                                                  |
|----------|-----------------------------------------------------------------------|
| `size`   | where an artifact's bytes go, codec table, what-if, budget line        |
| `ab`     | the A/B report of two training runs                                    |
| `plots`  | PNG figures for the size and A/B reports                               |

May import every earlier stage.
"""
