"""The multiple-choice knapsack `fit` solves: one candidate per group (matrix), least
total damage, total bytes within a capacity; plus the greedy steps that spend what the
solver's rounding leaves and verify the last bytes one real pack at a time.

Pure functions of (costs, damages): nothing here knows about tensors, which is what
lets the tests check the solver against brute force.
"""

from __future__ import annotations

import math

import numpy as np

from artifactkit.errors import InputError

DEFAULT_RESOLUTION = 100_000  # DP cells: slack from rounding is at most groups x capacity / this


def solve_knapsack(
    costs: list[list[int]], damages: list[list[float]], capacity: int, resolution: int = DEFAULT_RESOLUTION
) -> list[int] | None:
    """Pick one candidate per group minimising total damage with total cost <= capacity.

    Exact DP when the spare bytes above the cheapest plan fit in `resolution` cells;
    otherwise costs are rounded up to cells of `ceil(spare / resolution)` bytes, which
    keeps the answer feasible and within `groups` cells of optimal. Returns the chosen
    index per group, or None when even the cheapest plan exceeds `capacity`.
    Ties go to the lower index."""
    if len(costs) != len(damages) or any(len(c) != len(d) or not c for c, d in zip(costs, damages, strict=True)):
        raise InputError("knapsack: every group needs the same number (>= 1) of costs and damages")
    cheapest = [min(group) for group in costs]
    spare = capacity - sum(cheapest)
    if spare < 0:
        return None
    if not costs:
        return []
    unit = max(1, math.ceil(spare / max(1, resolution)))
    cells = spare // unit
    best = np.full(cells + 1, np.inf)
    best[0] = 0.0
    picks = np.zeros((len(costs), cells + 1), dtype=np.int32)
    for group, (group_costs, group_damages) in enumerate(zip(costs, damages, strict=True)):
        updated = np.full(cells + 1, np.inf)
        chosen = np.zeros(cells + 1, dtype=np.int32)
        for index, (cost, damage) in enumerate(zip(group_costs, group_damages, strict=True)):
            width = math.ceil((cost - cheapest[group]) / unit)
            if width > cells:
                continue
            trial = best[: cells + 1 - width] + float(damage)
            target = updated[width:]
            better = trial < target
            target[better] = trial[better]
            chosen[width:][better] = index
        best, picks[group] = updated, chosen
    cell = int(np.argmin(best))  # the first minimum: the fewest bytes among equal damage
    if not np.isfinite(best[cell]):
        return None
    plan = [0] * len(costs)
    for group in range(len(costs) - 1, -1, -1):
        index = int(picks[group, cell])
        plan[group] = index
        cell -= math.ceil((costs[group][index] - cheapest[group]) / unit)
    return plan


def _upgrades(costs: list[list[int]], damages: list[list[float]], plan: list[int],
              excluded: frozenset[tuple[int, int]] | set[tuple[int, int]] = frozenset()):
    """(group, index, step bytes, damage saved) for every single change that lowers damage."""
    for group, (group_costs, group_damages) in enumerate(zip(costs, damages, strict=True)):
        current = plan[group]
        for index, (cost, damage) in enumerate(zip(group_costs, group_damages, strict=True)):
            saved = group_damages[current] - damage
            if saved > 0 and (group, index) not in excluded:
                yield group, index, cost - group_costs[current], saved


def best_upgrade(costs: list[list[int]], damages: list[list[float]], plan: list[int], room: int,
                 excluded: frozenset[tuple[int, int]] | set[tuple[int, int]] = frozenset()) -> tuple[int, int] | None:
    """The single change with the most damage saved per byte whose step fits `room`."""
    best: tuple[float, int, int] | None = None
    for group, index, step, saved in _upgrades(costs, damages, plan, excluded):
        if step > room:
            continue
        ratio = math.inf if step <= 0 else saved / step
        if best is None or ratio > best[0]:
            best = (ratio, group, index)
    return None if best is None else (best[1], best[2])


def fill_greedy(costs: list[list[int]], damages: list[list[float]], plan: list[int], capacity: int) -> list[int]:
    """Spend what `plan` leaves of `capacity` on upgrades, best damage-per-byte first."""
    plan = list(plan)
    used = sum(group[index] for group, index in zip(costs, plan, strict=True))
    while (move := best_upgrade(costs, damages, plan, capacity - used)) is not None:
        group, index = move
        used += costs[group][index] - costs[group][plan[group]]
        plan[group] = index
    return plan


def smallest_step(costs: list[list[int]], damages: list[list[float]], plan: list[int],
                  excluded: frozenset[tuple[int, int]] | set[tuple[int, int]] = frozenset()) -> int | None:
    """Fewest bytes any damage-lowering change (not in `excluded`) would add; None if none is left."""
    steps = [step for _, _, step, _ in _upgrades(costs, damages, plan, excluded)]
    return min(steps) if steps else None


def cheapest_index(costs: list[int], damages: list[float]) -> int:
    """Index of the fewest bytes (least damage among equals, then the lower index)."""
    return min(range(len(costs)), key=lambda index: (costs[index], damages[index], index))
