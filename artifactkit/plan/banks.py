"""Parameter banks: expand stacked per-layer weights into per-layer tensors before
classification and quantization, and restore them exactly afterwards.

Banked training (one `[2L, d, d]` tensor for every layer's Q and O, ...) lets Muon
orthogonalise all layers in one batched call. The expanded names are the seed's
unbanked names (`b.N.a.q`, `b.N.m.u`, ...), so a banked checkpoint and its unbanked
twin classify and quantize identically -- the regression this project began with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from artifactkit.errors import InputError


@dataclass(frozen=True)
class BankLayout:
    """How one bank parameter splits: `roles` stacked along dim 0, each L layers long."""

    bank_name: str
    block: str  # `a` (attention) or `m` (MLP) in the expanded name
    roles: tuple[str, ...]
    reason: str


BANK_LAYOUTS: tuple[BankLayout, ...] = (
    BankLayout("qo_bank", "a", ("q", "o"), "[2L, d, d]: layers' Q projections, then their output projections"),
    BankLayout("kv_bank", "a", ("k", "v"), "[2L, kv_dim, d]: layers' K projections, then their V projections"),
    BankLayout("mlp_up_bank", "m", ("u",), "[L, hidden, d]: MLP up projections"),
    BankLayout("mlp_down_bank", "m", ("d",), "[L, d, hidden]: MLP down projections"),
)
_LAYOUT_BY_NAME = {layout.bank_name: layout for layout in BANK_LAYOUTS}


@dataclass(frozen=True)
class BankRecord:
    """Enough to put a bank back together: its name, dtype, shape and members in order."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    members: tuple[str, ...]

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "members": list(self.members)}

    @classmethod
    def from_json(cls, data: Mapping) -> BankRecord:
        return cls(str(data["name"]), tuple(int(x) for x in data["shape"]), str(data["dtype"]),
                   tuple(str(m) for m in data["members"]))


def bank_layout(name: str) -> tuple[str, BankLayout] | None:
    """(prefix, layout) when `name` is a bank parameter such as `model.qo_bank`."""
    prefix, _, last = name.rpartition(".")
    layout = _LAYOUT_BY_NAME.get(last)
    if layout is None:
        return None
    return (prefix + "." if prefix else ""), layout


def member_names(name: str, shape: tuple[int, ...]) -> list[str]:
    """The expanded names of bank `name` with `shape`, in dim-0 order."""
    found = bank_layout(name)
    if found is None:
        raise KeyError(name)
    prefix, layout = found
    if len(shape) != 3:
        raise InputError(
            f"{name}: a bank must be 3-D [stack, rows, cols] but has shape {list(shape)}; "
            "rename the tensor or add a user rule for it"
        )
    roles = len(layout.roles)
    if shape[0] % roles:
        raise InputError(
            f"{name}: first dimension {shape[0]} is not a multiple of {roles} ({'/'.join(layout.roles)}); "
            f"expected {layout.reason}"
        )
    layers = shape[0] // roles
    return [f"{prefix}b.{i % layers}.{layout.block}.{layout.roles[i // layers]}" for i in range(shape[0])]


def expand_banks(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[BankRecord]]:
    """Replace every bank by its per-layer slices (views, no copies), keeping order."""
    expanded: dict[str, torch.Tensor] = {}
    records: list[BankRecord] = []
    for name, tensor in state_dict.items():
        if bank_layout(name) is None:
            expanded[name] = tensor
            continue
        names = member_names(name, tuple(tensor.shape))
        for index, member in enumerate(names):
            if member in state_dict or member in expanded:
                raise InputError(
                    f"{name}: expanding the bank would create '{member}', which already exists; "
                    "the checkpoint mixes banked and unbanked weights for the same layer"
                )
            expanded[member] = tensor[index]
        records.append(BankRecord(name, tuple(tensor.shape), str(tensor.dtype).removeprefix("torch."), tuple(names)))
    return expanded, records


def restore_banks(state_dict: Mapping[str, torch.Tensor], records: list[BankRecord]) -> dict[str, torch.Tensor]:
    """Inverse of `expand_banks`: stack members back into their bank, at the position of
    the first member, so key order matches the original where possible."""
    member_to_bank = {m: rec for rec in records for m in rec.members}
    restored: dict[str, torch.Tensor] = {}
    for name, tensor in state_dict.items():
        record = member_to_bank.get(name)
        if record is None:
            restored[name] = tensor
            continue
        if record.name in restored:
            continue
        missing = [m for m in record.members if m not in state_dict]
        if missing:
            raise InputError(f"{record.name}: cannot restore the bank, members missing: {', '.join(missing[:4])}")
        bank = torch.stack([state_dict[m] for m in record.members])
        if tuple(bank.shape) != record.shape:
            raise InputError(f"{record.name}: restored shape {list(bank.shape)} differs from {list(record.shape)}")
        restored[record.name] = bank
    return restored
