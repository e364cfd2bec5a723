"""Stage 1, plan: decide what happens to every tensor before any number changes.

| module        | owns                                                                  |
|---------------|-----------------------------------------------------------------------|
| `schemes`     | THE table of storage facts: SchemeKind, bit range, levels, sections    |
| `rules`       | the built-in name -> category rule table (data, with a reason column)  |
| `banks`       | expanding 3-D weight banks to per-layer names, and restoring them      |
| `classify`    | user rules + built-in table -> a category per tensor; the guard        |
| `clip_rules`  | clip rules as data (`percentile`, `std:K`, `mse`) and their parser     |
| `policy`      | category (+ name pattern) -> scheme, versioned, serialised into headers |

Imports only the foundation modules (`artifactkit.errors`, ...), never a later stage.
"""
