"""Classification: the rule table, bank expansion and the fall-through guard."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from artifactkit.cli import main
from artifactkit.errors import InputError
from artifactkit.format.akit import pack_state_dict
from artifactkit.plan.banks import expand_banks, restore_banks
from artifactkit.plan.classify import UserRules, classify_name
from artifactkit.quantize.apply import quantize_state_dict
from artifactkit.synthetic import seed_shaped_state_dict, unbanked_twin

SMALL = dict(layers=2, dim=384, kv_heads=4, head_dim=64, vocab=256)


@pytest.mark.parametrize(("name", "category"), [
    ("tok_emb.weight", "embed"), ("bigram.emb.weight", "embed"), ("bigram.proj.weight", "embed"),
    ("bigram.scale", "control"), ("smear.gate", "control"), ("skip_w", "control"),
    ("blocks.3.attn.qg", "control"), ("blocks.3.as_", "control"), ("blocks.3.ms", "control"),
    ("blocks.3.rm", "control"),
    ("predictor.0.weight", "training_only"), ("ctx_proj.weight", "training_only"), ("tgt_proj.bias", "training_only"),
    ("b.7.a.q", "attn"), ("b.7.a.k", "attn"), ("b.7.a.v", "attn"), ("b.7.a.o", "attn"),
    ("b.7.m.u", "mlp"), ("b.7.m.d", "mlp"),
    ("blocks.0.attn.c_q.weight", "attn"), ("blocks.0.attn.c_k.weight", "attn"), ("blocks.0.attn.c_v.weight", "attn"),
    ("blocks.0.attn.proj.weight", "attn"), ("blocks.0.mlp.fc.weight", "mlp"), ("blocks.0.mlp.proj.weight", "mlp"),
    ("blocks.0.attn_scale", "control"), ("blocks.0.mlp_scale", "control"), ("blocks.0.resid_mix", "control"),
    ("blocks.0.attn.q_gain", "control"), ("skip_weights", "control"), ("lm_head.weight", "embed"),
    ("model.layers.2.self_attn.q_proj.weight", "attn"), ("model.layers.2.self_attn.o_proj.weight", "attn"),
    ("model.layers.2.mlp.gate_proj.weight", "mlp"), ("model.layers.2.mlp.up_proj.weight", "mlp"),
    ("model.layers.2.mlp.down_proj.weight", "mlp"), ("model.embed_tokens.weight", "embed"),
    ("encoder.layer.4.attention.self.query.weight", "attn"), ("encoder.layer.4.attention.output.dense.weight", "attn"),
    ("encoder.layer.4.intermediate.dense.weight", "mlp"), ("encoder.layer.4.output.dense.weight", "mlp"),
    ("transformer.wte.weight", "embed"), ("transformer.wpe.weight", "embed"), ("pooler.dense.weight", "mlp"),
    ("model.layers.2.input_layernorm.weight", "control"), ("transformer.h.0.ln_1.weight", "control"),
])
def test_builtin_table_recognises_known_names(name, category):
    assert classify_name(name)[0] == category


def test_regression_unbanked_a_m_names_get_int6_like_banked():
    """The bug that started the project: `.a.`/`.m.` names fell to int8 (39.7 MB)."""
    banked = seed_shaped_state_dict(**SMALL)
    twin = unbanked_twin(banked)
    plan_banked = {e.name: (e.category, e.scheme.label) for e in quantize_state_dict(banked).entries}
    plan_twin = {e.name: (e.category, e.scheme.label) for e in quantize_state_dict(twin).entries}
    assert plan_banked == plan_twin
    matrices = [n for n in plan_twin if ".a." in n or ".m." in n]
    assert len(matrices) == 6 * SMALL["layers"]
    assert all(plan_twin[n][1] == "int6" and plan_twin[n][0] in ("attn", "mlp") for n in matrices)
    # and the same weights give the same codes, hence (after restore) the same tensors
    a = pack_state_dict(banked, codec="zlib")
    b = pack_state_dict(twin, codec="zlib")
    assert a.header["sections"][0]["raw_bytes"] == b.header["sections"][0]["raw_bytes"]
    assert abs(a.artifact_bytes - b.artifact_bytes) < 0.01 * a.artifact_bytes


@settings(max_examples=30, deadline=None)
@given(layers=st.integers(1, 4), rows=st.integers(1, 6), cols=st.integers(1, 6), prefix=st.sampled_from(["", "model."]),
       dtype=st.sampled_from([torch.float32, torch.bfloat16, torch.float16]))
def test_bank_expand_restore_roundtrip(layers, rows, cols, prefix, dtype):
    state = {
        f"{prefix}qo_bank": torch.randn(2 * layers, rows, rows).to(dtype),
        f"{prefix}kv_bank": torch.randn(2 * layers, cols, rows).to(dtype),
        f"{prefix}mlp_up_bank": torch.randn(layers, cols, rows).to(dtype),
        f"{prefix}mlp_down_bank": torch.randn(layers, rows, cols).to(dtype),
        f"{prefix}tok_emb.weight": torch.randn(5, rows).to(dtype),
    }
    expanded, records = expand_banks(state)
    assert f"{prefix}b.{layers - 1}.a.o" in expanded and f"{prefix}b.0.m.d" in expanded
    assert torch.equal(expanded[f"{prefix}b.0.a.o"], state[f"{prefix}qo_bank"][layers])
    restored = restore_banks(expanded, records)
    assert list(restored) == list(state)
    for key in state:
        assert restored[key].dtype == state[key].dtype and torch.equal(restored[key], state[key])


def test_bank_with_odd_stack_is_a_clear_error():
    with pytest.raises(InputError, match="not a multiple of 2"):
        expand_banks({"qo_bank": torch.zeros(3, 4, 4)})


def test_user_rules_precedence(tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text('[exact]\n"blocks.0.mlp.fc.weight" = "attn"\n\n[[rule]]\nregex = "mlp\\\\.fc"\n'
                     'category = "embed"\nreason = "test"\n\n[[rule]]\nregex = "weird"\ncategory = "mlp"\n')
    user = UserRules.load(rules)
    assert classify_name("blocks.0.mlp.fc.weight", user)[:1] == ("attn",)  # exact beats regex
    assert classify_name("blocks.1.mlp.fc.weight", user)[0] == "embed"  # regex beats built-in
    assert classify_name("weird.thing", user)[0] == "mlp"
    assert classify_name("blocks.1.mlp.proj.weight", user)[0] == "mlp"  # built-in still applies
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\nregex = "x"\ncategory = "nonsense"\n')
    with pytest.raises(InputError, match="unknown category"):
        UserRules.load(bad)


def test_guard_warns_everywhere_and_fails_under_strict(tmp_path):
    state = {"mystery.matrix": torch.randn(300, 300), "tok_emb.weight": torch.randn(64, 32)}
    ckpt = tmp_path / "m.pt"
    torch.save(state, ckpt)
    runner = CliRunner()
    result = runner.invoke(main, ["classify", str(ckpt)])
    assert result.exit_code == 0 and "warning:" in result.stderr and "mystery.matrix" in result.stderr
    result = runner.invoke(main, ["classify", str(ckpt), "--strict"])
    assert result.exit_code == 1 and "mystery.matrix" in result.stderr
    result = runner.invoke(main, ["classify", str(ckpt), "--json"])
    assert json.loads(result.stdout)["unclassified"] == ["mystery.matrix"]
    out = tmp_path / "m.akit"
    result = runner.invoke(main, ["pack", str(ckpt), "-o", str(out)])
    assert result.exit_code == 0 and "warning:" in result.stderr and out.exists()
    result = runner.invoke(main, ["check", str(out)])
    assert result.exit_code == 1 and "fell through" in result.stderr
    result = runner.invoke(main, ["pack", str(ckpt), "-o", str(tmp_path / "strict.akit"), "--strict"])
    assert result.exit_code == 1 and not (tmp_path / "strict.akit").exists()
    # a user rule fixes it
    rules = tmp_path / "r.toml"
    rules.write_text('[exact]\n"mystery.matrix" = "mlp"\n')
    result = runner.invoke(main, ["pack", str(ckpt), "-o", str(out), "--rules", str(rules), "--strict", "--json"])
    assert result.exit_code == 0, result.stderr
    plan = {t["name"]: t["scheme"] for t in json.loads(result.stdout)["tensors"]}
    assert plan["mystery.matrix"] == "int6"
    assert runner.invoke(main, ["check", str(out)]).exit_code == 0


def test_classify_json_contract(tmp_path):
    ckpt = tmp_path / "c.pt"
    torch.save(seed_shaped_state_dict(**SMALL), ckpt)
    result = CliRunner().invoke(main, ["classify", str(ckpt), "--json"])
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert set(document) >= {"tensors", "unclassified"}
    row = next(t for t in document["tensors"] if t["name"] == "b.0.a.q")
    assert {k: row[k] for k in ("category", "scheme", "bits")} == {"category": "attn", "scheme": "int6", "bits": 6}
    assert row["numel"] == 384 * 384
