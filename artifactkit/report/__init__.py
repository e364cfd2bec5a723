"""Stage 6, report: what a person reads.

| module   | owns                                                                  |
|----------|-----------------------------------------------------------------------|
| `size`   | where an artifact's bytes go, codec table, what-if, budget line        |
| `ab`     | the A/B report of two training runs                                    |
| `plots`  | PNG figures for the size and A/B reports                               |
| `submission_audit` | `audit DIR`: a submission folder checked the way the organizers do |
| `audit_logs`  | per-seed training logs of every public format, parsed liberally |
| `audit_code`  | code bytes recomputed: entry script, local imports, wrappers decoded without running |
| `audit_stats` | mean, sample std, Student t CDF, one-sided Welch test (stdlib only) |

May import every earlier stage.
"""
