"""`--policy seed` against the seed's own packer: `mq6` re-implemented here from the
seed's train_gpt.py (its q6_row / qf_tensor / size-then-control order), independently of
artifactkit.quantize. Codes, scales and passthrough dtypes must be identical."""

from __future__ import annotations

import torch
from click.testing import CliRunner

from artifactkit.cli import main
from artifactkit.format.akit import pack_state_dict
from artifactkit.format.reader import read_artifact
from artifactkit.plan.banks import expand_banks
from artifactkit.plan.policy import resolve_policy
from artifactkit.synthetic import seed_shaped_state_dict

CONTROL_PATTERNS = ("attn_scale", "mlp_scale", "resid_mix", "skip_weight", "q_gain", "bigram.scale", "smear")


def seed_q6_row(t: torch.Tensor, levels: int = 31):
    t32 = t.float()
    best_codes, best_scale, best_error = None, None, float("inf")
    for p in (0.999, 0.9995, 0.9999, 0.99999, 1.0):
        clip = torch.quantile(t32.abs(), p, dim=1) if p < 1 else t32.abs().amax(dim=1)
        scale = (clip / levels).clamp_min(1 / levels).to(torch.float16)
        codes = torch.clamp(torch.round(t32 / scale.float()[:, None]), -levels, levels).to(torch.int8)
        error = (t32 - codes.float() * scale.float()[:, None]).pow(2).mean().item()
        if error < best_error:
            best_codes, best_scale, best_error = codes, scale, error
    return best_codes, best_scale


def seed_qf_tensor(t: torch.Tensor):
    t32 = t.float()
    clip = torch.quantile(t32.abs(), 0.9999984, dim=1)
    scale = (clip / 127).clamp_min(1 / 127).to(torch.float16)
    clamped = torch.clamp(t32, -clip[:, None], clip[:, None])
    return torch.clamp(torch.round(clamped / scale.float()[:, None]), -127, 127).to(torch.int8), scale


def seed_category(name: str) -> str:
    if "tok_emb" in name:
        return "embed"
    if ".mlp" in name or ".m." in name:
        return "mlp"
    if ".attn" in name or ".a." in name:
        return "attn"
    return "other"


def seed_mq6(state: dict[str, torch.Tensor]) -> dict[str, tuple]:
    """name -> ("pt", tensor) | ("ctrl", tensor) | ("int", bits, codes, scale), as mq6 decides."""
    out = {}
    for name, tensor in state.items():
        if not tensor.is_floating_point() or tensor.numel() <= 65536:
            out[name] = ("pt", tensor.to(torch.float16) if tensor.is_floating_point() else tensor)
        elif any(pattern in name for pattern in CONTROL_PATTERNS):
            out[name] = ("ctrl", tensor.float())
        elif seed_category(name) in ("attn", "mlp"):
            out[name] = ("int", 6, *seed_q6_row(tensor))
        else:
            out[name] = ("int", 8, *seed_qf_tensor(tensor))
    return out


def seed_like_state() -> dict[str, torch.Tensor]:
    state = seed_shaped_state_dict(layers=2, dim=256, kv_heads=2, head_dim=64, vocab=512)
    generator = torch.Generator().manual_seed(11)
    # heavy tails, so the percentile choice matters; tiny rows, so the 1/levels floor matters
    state["mlp_down_bank"] = state["mlp_down_bank"] * (
        1 + 20 * torch.rand(state["mlp_down_bank"].shape, generator=generator) ** 8)
    state["mlp_up_bank"][0, :8] *= 1e-3
    state["big.skip_weight"] = torch.randn(300, 256, generator=generator)  # a large control: fp32
    return state


def test_seed_policy_reproduces_the_seeds_packer_exactly():
    state = seed_like_state()
    expected = seed_mq6(expand_banks(state)[0])
    reader = read_artifact(pack_state_dict(state, resolve_policy("seed"), "lzma").data)
    quantized = reader.quantized()
    restored = reader.expanded_state_dict()
    stored = {t.name: t for t in reader.tensors}
    assert set(stored) == set(expected)
    int_count = 0
    for name, decision in expected.items():
        if decision[0] == "int":
            int_count += 1
            _, bits, codes, scale = decision
            assert stored[name].bits == bits, name
            assert torch.equal(quantized[name].codes, codes), name
            assert torch.equal(quantized[name].scales, scale), name
        elif decision[0] == "ctrl":
            assert stored[name].label == "fp32" and torch.equal(restored[name], decision[1].to(restored[name].dtype))
        elif decision[1].is_floating_point():
            assert stored[name].label == "fp16", name
            assert torch.equal(restored[name].to(torch.float16), decision[1]), name
    assert int_count >= 5 and {d[1] for d in expected.values() if d[0] == "int"} == {6, 8}


def test_the_floor_and_the_per_tensor_choice_differ_from_int6_mixed():
    """The two int6 rules are not the same method: the seed's floors tiny rows at 1/31
    (their codes collapse to 0) where int6-mixed keeps their precision."""
    state = seed_like_state()
    seed = read_artifact(pack_state_dict(state, resolve_policy("seed"), "lzma").data).quantized()["b.0.m.u"]
    ours = read_artifact(pack_state_dict(state, resolve_policy("int6-mixed"), "lzma").data).quantized()["b.0.m.u"]
    assert int(seed.codes[:8].abs().max()) <= 1 < int(ours.codes[:8].abs().max())


def test_pack_policy_seed_from_the_command_line(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save(seed_like_state(), path)
    result = CliRunner().invoke(main, ["pack", str(path), "-o", str(tmp_path / "seed.akit"), "--policy", "seed"])
    assert result.exit_code == 0, result.stderr
    reader = read_artifact(tmp_path / "seed.akit")
    assert reader.policy_name == "seed" and reader.header["policy"]["small_first"] is True
    assert {t.clip for t in reader.tensors if t.is_int} == {"seed", "seed:0.9999984"}
