"""Source text of the standalone `.akit` loader, in pieces that `loader_export` joins.

The pieces are plain Python source, kept short because every byte of the exported
module counts against the artifact budget when it is pasted into a training script.
The loader mirrors `artifactkit.format.reader.ArtifactReader.state_dict` operation for
operation (same dtype conversions, same order), which is what makes it bit-exact;
`tests/artifactkit/test_loader.py` checks that in a separate process.

It checks the magic, version, payload sha256 and every section's decoded size, but
unlike `ArtifactReader` it does not bound decompression before allocating: it is
meant for your own artifact, not for files from strangers.
"""

from __future__ import annotations

DOCSTRING = '"""Load an artifactkit .akit file: load_artifact(path) -> {name: torch.Tensor}. ' \
            'Exported by `artifactkit export-loader`{codecs}."""\n'

IMPORTS = "import hashlib, json, math, struct, zlib\nimport numpy as np\nimport torch\n"

# codec name -> (import line or "", decompress expression)
CODEC_SOURCES: dict[str, tuple[str, str]] = {
    "raw": ("", "bytes"),
    "zlib": ("", "zlib.decompress"),
    "lzma": ("import lzma\n", "lzma.decompress"),
    "zstd": ("import zstandard\n", "lambda b: zstandard.ZstdDecompressor().decompress(b)"),
    "brotli": ("import brotli\n", "brotli.decompress"),
}

# `{ans}` becomes ANS_BRANCH or "" depending on whether the entropy decoder is included.
BODY = '''
def _fp16(data):  # float16 stored byte-split: all low bytes, then all high bytes
    halves = np.frombuffer(data, np.uint8).reshape(2, -1)
    return np.ascontiguousarray(halves.T).view("<f2").reshape(-1)


def load_artifact(path):
    data = open(path, "rb").read()
    magic, version, size = struct.unpack_from("<8sHI", data)
    if magic != b"AKIT\\r\\n\\x1a\\n" or version not in VERSIONS:
        raise ValueError(f"{path}: not an akit/1 artifact this loader reads (v{version}); export with --artifact")
    header = json.loads(zlib.decompress(data[14:14 + size]))
    payload = data[14 + size:]
    if hashlib.sha256(payload).hexdigest() != header["payload_sha256"]:
        raise ValueError(f"{path}: payload sha256 mismatch; the file is damaged")
    tensors, decoded, offset = header["tensors"], {}, 0
    for section in header["sections"]:
        size, name, codec = section["stored_bytes"], section["name"], section["codec"]
        blob, offset = payload[offset:offset + size], offset + size
{ans}        if codec not in DECOMPRESS:
            raise ValueError(f"{path}: codec {codec} is not in this loader; re-export it with that codec")
        decoded[name] = DECOMPRESS[codec](blob) if blob else b""
        if len(decoded[name]) != section["raw_bytes"]:
            raise ValueError(f"{path}: section {name} has the wrong size; the file is damaged")
    arrays = {"codes": np.frombuffer(decoded["codes"], np.int8), "scales": _fp16(decoded["scales"]),
              "half": _fp16(decoded["half"]), "fp32": np.frombuffer(decoded["fp32"], "<f4"),
              "raw": np.frombuffer(decoded["raw"], np.uint8)}
{lowrank_arrays}    at = dict.fromkeys(arrays, 0)

    def take(name, count):  # the next `count` items of a section (tensors are stored in header order)
        at[name] += count
        return arrays[name][at[name] - count:at[name]].copy()

    out = {}
    for tensor in tensors:
        shape, count, kind = tensor["shape"], math.prod(tensor["shape"]), tensor["scheme"]
        if kind == "int":  # per-row symmetric: codes * fp16 row scale
            codes = torch.from_numpy(take("codes", count).reshape(shape[0], -1)).to(torch.float32)
            value = codes * torch.from_numpy(take("scales", shape[0])).to(torch.float32).unsqueeze(1)
{lowrank_branch}        elif kind == "raw":  # non-float tensors in their own dtype (bool as uint8)
            np_dtype = np.dtype(RAW[tensor["dtype"]])
            value = torch.from_numpy(take("raw", count * np_dtype.itemsize).view(np_dtype))
        else:
            value = torch.from_numpy(take("half" if kind == "fp16" else "fp32", count))
        out[tensor["name"]] = value.reshape(shape).to(getattr(torch, tensor["dtype"]))
    banks = {member: bank for bank in header["banks"] for member in bank["members"]}
    state = {}
    for name, value in out.items():  # put stacked per-layer banks back together
        bank = banks.get(name)
        if bank is None:
            state[name] = value
        elif bank["name"] not in state:
            state[bank["name"]] = torch.stack([out[m] for m in bank["members"]])
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

# The codes section under `ans` is decoded by DECODER_SOURCE's decode_codes.
ANS_BRANCH = '''\
        if codec == "ans":
            ints = [tensor for tensor in tensors if tensor["scheme"] == "int"]
            shapes = [(t["shape"][0], math.prod(t["shape"]) // t["shape"][0]) for t in ints]  # rows, cols
            arrays = decode_codes(blob, shapes, [t["bits"] for t in ints])
            blob, codec = b"".join(a.tobytes() for a in arrays), "raw"
'''
