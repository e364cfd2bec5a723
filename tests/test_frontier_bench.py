"""The frontier benchmark (bench/frontier.py) and the record codec it measures with
(bench/record_codec.py): the codec round-trips bit for bit, stores its row orders and
counts every byte; the smoke run writes a report whose every listed point is a real file
of exactly the listed size. The full benchmark is not a test (hours on a CPU)."""

from __future__ import annotations

import importlib
import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from artifactkit.fit.record import RecordRecipe, record_quantize
from artifactkit.format.akit import encode_artifact
from artifactkit.format.reader import read_artifact

ROOT = Path(__file__).resolve().parents[1]
SHARED_TOKENIZER = ROOT.parent / "shared" / "tokenizers" / "fineweb_1024_bpe.model"
SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"


def load_bench(name: str):
    """A benchmark script as a module (bench/ is not a package; frontier.py imports
    record_codec by its plain name, so both load that way)."""
    if str(ROOT / "bench") not in sys.path:
        sys.path.append(str(ROOT / "bench"))  # last: bench/train.py must not shadow the train package
    return importlib.import_module(name)


codec = load_bench("record_codec")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def quantized():
    """A banked-free model with int matrices (two with LQER), fp16 control and a raw tensor."""
    generator = torch.Generator().manual_seed(5)
    state = {
        "blocks.0.attn.c_q.weight": torch.randn(40, 64, generator=generator),
        "blocks.0.mlp.fc.weight": torch.randn(96, 64, generator=generator) * 3,
        "tok_emb.weight": torch.randn(80, 64, generator=generator),
        "blocks.0.attn_scale": torch.rand(64, generator=generator),
        "steps": torch.arange(5, dtype=torch.int64),
    }
    hessians = {}
    for name in ("blocks.0.attn.c_q.weight", "blocks.0.mlp.fc.weight", "tok_emb.weight"):
        inputs = torch.randn(200, 64, generator=generator)
        hessians[name] = inputs.T @ inputs / 200
    return record_quantize(state, hessians, RecordRecipe(small_threshold=0, lqer_top_k=2))


def test_similarity_order_is_a_greedy_nearest_neighbour_tour() -> None:
    codes = np.array([[0, 0, 0], [9, 9, 9], [1, 0, 0], [8, 9, 9], [2, 1, 0]], dtype=np.int8)
    assert codec.similarity_order(codes).tolist() == [0, 2, 4, 3, 1]


def test_byte_shuffle_round_trips_odd_lengths() -> None:
    for length in (0, 1, 2, 7, 10):
        data = bytes(range(length))
        shuffled = codec.byte_shuffle(data)
        assert codec.byte_unshuffle(shuffled) == data
        if length == 7:
            assert shuffled == bytes([0, 2, 4, 6, 1, 3, 5])


@pytest.mark.parametrize("variant", codec.VARIANTS)
def test_record_codec_round_trips_and_counts_every_byte(quantized, variant, tmp_path) -> None:
    if variant == "lrzip" and codec.lrzip_missing():
        pytest.skip(codec.lrzip_missing())
    blob = codec.encode(quantized, variant)
    decoded = codec.decode(blob)
    assert decoded.equal(codec.model_parts(quantized))
    (codes_length,) = struct.unpack_from("<I", blob, 5)
    assert blob[:4] == codec.MAGIC and 9 + codes_length < len(blob)  # the brotli part follows the codes
    assert (codes_length > 0) == (variant == "lrzip")
    result, parts = codec.measure(quantized, variant, tmp_path / "model.rcdc")
    assert result.bytes == (tmp_path / "model.rcdc").stat().st_size == len(blob)
    # The decoded weights are the model's: codes * scales + LQER, fp16 passthrough, raw as is.
    restored = codec.parts_state_dict(parts)
    for entry in quantized.entries:
        expected = entry.restored()
        assert torch.equal(restored[entry.name], expected.to(restored[entry.name].dtype)), entry.name
    assert sum(entry.lowrank is not None for entry in quantized.entries) == 2


def test_row_orders_are_stored_and_undone(quantized) -> None:
    if codec.lrzip_missing():
        pytest.skip(codec.lrzip_missing())
    blob = codec.encode(quantized, "lrzip")
    (codes_length,) = struct.unpack_from("<I", blob, 5)
    document, binary = codec._split_table(codec.byte_unshuffle(__import__("brotli").decompress(blob[9 + codes_length:])))
    orders = {key: shape for key, _, shape in document["layout"] if key.endswith("/row_order")}
    int_entries = [entry for entry in quantized.entries if entry.quantized is not None]
    assert sorted(orders) == sorted(f"{entry.name}/row_order" for entry in int_entries)
    arrays = codec._unpack_arrays(document["layout"], binary)
    for entry in int_entries:
        order = arrays[f"{entry.name}/row_order"]
        assert sorted(order.tolist()) == list(range(entry.shape[0]))
        assert order.tolist() == codec.similarity_order(entry.quantized.codes.numpy()).tolist()
        assert order.tolist() != list(range(entry.shape[0]))  # random rows: the tour reorders them


def test_codec_decodes_what_akit_stores_when_lqer_is_off(quantized) -> None:
    without = record_quantize({e.name: e.restored() for e in quantized.entries if e.quantized is not None}, {},
                              RecordRecipe(small_threshold=0, lqer_top_k=0))
    parts = codec.decode(codec.encode(without, "brotli"))
    from_akit = read_artifact(encode_artifact(without).data).state_dict()
    restored = codec.parts_state_dict(parts)
    assert restored.keys() == from_akit.keys()
    assert all(torch.equal(restored[name], from_akit[name]) for name in restored)


def test_lrzip_missing_gives_a_reason_not_a_crash(quantized, monkeypatch) -> None:
    monkeypatch.setattr(codec.shutil, "which", lambda _name: None)
    result, parts = codec.measure(quantized, "lrzip")
    assert result.bytes is None and parts is None and "apt-get install -y lrzip" in result.skipped


# --------------------------------------------------------------------------- the smoke run


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    frontier = load_bench("frontier")
    root = tmp_path_factory.mktemp("frontier")
    argv = ["--smoke", "--work-dir", str(root / "work"), "--report-dir", str(root / "report")]
    if SHARED_TOKENIZER.is_file() and SHAKESPEARE.is_file():  # faster; without them it trains a tokenizer
        argv += ["--smoke-tokenizer", str(SHARED_TOKENIZER), "--smoke-text", str(SHAKESPEARE)]
    assert frontier.main(argv) == 0
    return root / "report"


def test_smoke_report_has_every_section_and_both_seeds(smoke) -> None:
    text = (smoke / "frontier.md").read_text()
    for heading in ("## Checkpoints", "## Pipelines", "## Seed A (chose settings): all points",
                    "## Seed B (reported): all points", "## Targets on seed B (reported)",
                    "**1. At equal bytes", "**2. At each record-frontier point", "**3. At the default int6 pack"):
        assert heading in text, heading
    assert "Machine:" in text and "python bench/frontier.py --smoke" in text
    assert (smoke / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    document = json.loads((smoke / "frontier.json").read_text())
    assert [c["role"] for c in document["checkpoints"]] == ["chose settings", "reported"]
    pipelines = {p["pipeline"] for p in document["points"]}
    assert {"baseline", "seed", "default", "record", "record-ours", "retuned-e7", "fit"} <= pipelines
    for name in ("A", "B"):
        assert document["targets"][name]["default_pack"] is not None
        assert document["targets"][name]["frontier"]


def test_smoke_every_listed_point_is_a_real_file_of_that_size(smoke) -> None:
    document = json.loads((smoke / "frontier.json").read_text())
    measured = [p for p in document["points"] if p["bytes"] is not None]
    assert len(measured) >= 2 * 7
    for point in measured:
        path = Path(point["path"])
        assert path.stat().st_size == point["bytes"], point
        if path.suffix == ".akit":
            assert read_artifact(path).artifact_bytes == point["bytes"]
        else:
            assert codec.decode(path.read_bytes()).table  # the record codec's blob decodes
    skipped = [p for p in document["points"] if p["bytes"] is None]
    assert all(p["notes"] for p in skipped)  # a point without bytes says why
    text = (smoke / "frontier.md").read_text()
    for point in measured:
        assert f"{point['bytes']:,}" in text


def test_held_out_validation_is_corpus_text_the_corpus_does_not_contain() -> None:
    """The bench extends the embedded corpus's short validation split with standard-library
    docstrings of modules outside the corpus's list: real text, BOS before each document,
    and no document whose text the corpus (train or validation) already holds."""
    if not SHARED_TOKENIZER.is_file():
        pytest.skip(f"{SHARED_TOKENIZER} is absent (the shared folder beside the repository)")
    import sentencepiece

    from train.corpus import DOCSTRING_MODULES, embedded_documents, module_docstrings
    from train.data import encode_documents

    frontier = load_bench("frontier")
    sp = sentencepiece.SentencePieceProcessor(model_file=str(SHARED_TOKENIZER))
    tokens = frontier.held_out_tokens(sp)
    assert not set(frontier.HELD_OUT_MODULES) & set(DOCSTRING_MODULES)
    assert len(tokens) > frontier.MIN_VAL_TOKENS // 2  # with the 27k of the split, past 65,536
    seen = {document.digest for document in embedded_documents()}
    documents = [d for module in frontier.HELD_OUT_MODULES for d in module_docstrings(module) if d.digest not in seen]
    assert np.array_equal(tokens, encode_documents(sp, documents))
    assert all(d.digest not in seen for d in documents) and len(documents) > 100
