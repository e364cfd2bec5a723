"""Source text of the standalone `.akit` loader, in pieces that `loader_export` joins.

The pieces are plain Python source, kept short because every byte of the exported
module counts against the artifact budget when it is pasted into a training script.
The loader mirrors `artifactkit.format.reader.ArtifactReader.state_dict` operation for
operation (same dtype conversions, same order), which is what makes it bit-exact;
`tests/artifactkit/test_loader.py` checks that in a separate process.

It repeats the reader's validation (`artifactkit.format.validate`) in a few lines, so a
damaged or hostile file is one `ValueError` naming the file, never a crash, a silent
change or an allocation bomb: it reads at most CAP bytes of file, refuses declared
section sizes over CAP in total before decompressing, decompresses each section bounded
by its declared size, checks the section table's order, the dtypes (float8 / complex
are refused), unique names, and that the shapes use every section exactly (before the
entropy decoder allocates for them), and checks bank records against the tensors.
"""

from __future__ import annotations

DOCSTRING = '"""Load an artifactkit .akit file: load_artifact(path) -> {name: torch.Tensor}, or ValueError. ' \
            'Exported by `artifactkit export-loader`{codecs}."""\n'

# Modules the loader body needs; `loader_export` drops those the rANS decoder source
# (pasted first when included) already imports.
BODY_MODULES = ("hashlib", "json", "math", "struct", "zlib")

# codec name -> (module to import or "", decompress(blob, n) -> at most n + 1 bytes)
CODEC_SOURCES: dict[str, tuple[str, str]] = {
    "raw": ("", "lambda b, n: b"),
    "zlib": ("", "lambda b, n: zlib.decompressobj().decompress(b, n + 1)"),
    "lzma": ("lzma", "lambda b, n: lzma.LZMADecompressor(memlimit=CAP).decompress(b, n + 1)"),
    "zstd": ("zstandard", "lambda b, n: zstandard.ZstdDecompressor().stream_reader(b).read(n + 1)"),
    "brotli": ("brotli", "lambda b, n: brotli.Decompressor().process(b, output_buffer_limit=n + 1)"),
}

# CAP: artifactkit.io.MAX_ARTIFACT_FILE_BYTES (file bytes, lzma memory) and
# limits.MAX_DECODED_BYTES (all sections, decoded); CAP >> 4: the header's JSON
# (limits.MAX_HEADER_JSON_BYTES).
CONSTANTS = 'CAP = 1 << 28\nFLOATS = "float32", "float16", "bfloat16", "float64"\n'

# `{ans}` becomes ANS_BRANCH or "" depending on whether the entropy decoder is included.
BODY = '''
def _fp16(data):  # float16 stored byte-split: low bytes, then high bytes
    halves = np.frombuffer(data, np.uint8).reshape(2, -1)
    return np.ascontiguousarray(halves.T).view("<f2").reshape(-1)


def _need(ok, why):
    if not ok:
        raise ValueError(why + "; the file is damaged")


def load_artifact(path):
    try:
        return _load(path)
    except Exception as error:  # whatever damage causes, in one line
        raise ValueError(f"{path}: {type(error).__name__}: {error}".split("\\n")[0]) from error


def _load(path):
    with open(path, "rb") as file:
        data = file.read(CAP + 1)
    magic, version, size = struct.unpack_from("<8sHI", data)
    if magic != b"AKIT\\r\\n\\x1a\\n" or version not in VERSIONS or len(data) > CAP:
        raise ValueError(f"not an akit/1 artifact this loader reads (v{version}); export with --artifact")
    header = json.loads(zlib.decompressobj().decompress(data[14:14 + size], CAP >> 4))
    payload, sections = data[14 + size:], header["sections"]
    _need(hashlib.sha256(payload).hexdigest() == header["payload_sha256"], "payload sha256 mismatch")
    raws = [s["raw_bytes"] for s in sections]
    _need(min(raws) >= 0 and sum(raws) <= CAP, "bad section sizes")
    tensors, decoded, offset = header["tensors"], {}, 0
    for section, raw in zip(sections, raws):
        size, name, codec = section["stored_bytes"], section["name"], section["codec"]
        blob, offset = payload[offset:offset + size], offset + size
{ans}        if codec not in DECOMPRESS:
            raise ValueError(f"codec {codec} is not in this loader; re-export it with that codec")
        decoded[name] = DECOMPRESS[codec](blob, raw) if blob else b""
        _need(len(decoded[name]) == raw, f"section {name} has the wrong size")
    arrays = {"codes": np.frombuffer(decoded["codes"], np.int8), "scales": _fp16(decoded["scales"]),
              "half": _fp16(decoded["half"]), "fp32": np.frombuffer(decoded["fp32"], "<f4"),
              "raw": np.frombuffer(decoded["raw"], np.uint8)}
{lowrank_arrays}    _need([s["name"] for s in sections] == list(arrays), "bad section order")
    at = dict.fromkeys(arrays, 0)

    def take(name, count):  # the next `count` items (tensors are stored in header order)
        at[name] += count
        return arrays[name][at[name] - count:at[name]].copy()

    out = {}
    for tensor in tensors:
        shape, count, kind, dtype = tensor["shape"], math.prod(tensor["shape"]), tensor["scheme"], tensor["dtype"]
        _need(tensor["name"] not in out and min(shape, default=0) >= 0 and dtype in (RAW if kind == "raw" else FLOATS),
              f"tensor {tensor['name']}")
        if kind == "int":  # codes * fp16 row scale
            codes = torch.from_numpy(take("codes", count).reshape(shape[0], -1)).to(torch.float32)
            value = codes * torch.from_numpy(take("scales", shape[0])).to(torch.float32).unsqueeze(1)
{lowrank_branch}        elif kind == "raw":  # in their own dtype, bool as uint8
            np_dtype = np.dtype(RAW[dtype])
            value = torch.from_numpy(take("raw", count * np_dtype.itemsize).view(np_dtype))
        else:
            value = torch.from_numpy(take({"fp16": "half", "fp32": "fp32"}[kind], count))
        out[tensor["name"]] = value.reshape(shape).to(getattr(torch, dtype))
    _need(at == {name: len(a) for name, a in arrays.items()}, "shapes and sections disagree")
    banks = {member: bank for bank in header["banks"] for member in bank["members"]}
    state = {}
    for name, value in out.items():  # stack per-layer banks again
        bank = banks.get(name)
        if bank is None:
            state[name] = value
        elif bank["name"] not in state:
            state[bank["name"]] = value = torch.stack([out[m] for m in bank["members"]])
            _need(list(value.shape) == bank["shape"], "bank shape")
    _need(len(state) == len(out) - sum(len(b["members"]) - 1 for b in header["banks"]), "bad bank records")
    return state
'''

# Format versions the loader reads: 1, and 2 (LQER factors) when LOWRANK_* are included.
VERSIONS_PLAIN = "VERSIONS = (1,)\n"
VERSIONS_LOWRANK = "VERSIONS = (1, 2)\n"

# `{lowrank_arrays}` / `{lowrank_branch}` become these (or "") when the loader applies LQER
# corrections: W = codes * scale + A_hat @ B_hat, float32, in the reader's order of operations.
LOWRANK_ARRAYS = '''\
    if version == 2:  # LQER factors: int8 codes (A then B per tensor), fp16 scales (A's, then B's groups)
        arrays.update(lowrank_codes=np.frombuffer(decoded["lowrank_codes"], np.int8),
                      lowrank_scales=_fp16(decoded["lowrank_scales"]))
'''
LOWRANK_BRANCH = '''\
            if "lowrank" in tensor:  # + A_hat @ B_hat
                rank, group, cols = tensor["lowrank"]["rank"], tensor["lowrank"]["group"], value.shape[1]
                a = torch.from_numpy(take("lowrank_codes", shape[0] * rank).reshape(-1, rank)).to(torch.float32)
                b = torch.from_numpy(take("lowrank_codes", rank * cols).reshape(-1, group)).to(torch.float32)
                a = a * torch.from_numpy(take("lowrank_scales", 1)).to(torch.float32)
                b = b * torch.from_numpy(take("lowrank_scales", rank * cols // group)).to(torch.float32).unsqueeze(1)
                value = value + a @ b.reshape(rank, cols)
'''

RAW_TABLE = ('RAW = {"int64": "<i8", "int32": "<i4", "int16": "<i2", "int8": "i1", "uint8": "u1", '
             '"bool": "u1"}\n')

# The codes section under `ans` is decoded by DECODER_SOURCE's decode_codes, after the
# shapes are checked against the declared size and the tables (2**prec int64 each, prec
# <= 15) to fewer than 512 (blob[7] < 2): limits.MAX_ANS_TABLE_ENTRIES; pack writes <= 448.
ANS_BRANCH = '''\
        if codec == "ans":
            ints = [tensor for tensor in tensors if tensor["scheme"] == "int"]
            shapes = [(t["shape"][0], math.prod(t["shape"]) // t["shape"][0]) for t in ints]  # rows, cols
            _need(name == "codes" and sum(r * c for r, c in shapes) == raw and blob[7] < 2, "bad codes section")
            arrays = decode_codes(blob, shapes, [t["bits"] for t in ints])
            blob, codec = b"".join(a.tobytes() for a in arrays), "raw"
'''
