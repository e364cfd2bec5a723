"""Stage 3, format: bytes on disk, and back.

| module             | owns                                                                |
|--------------------|---------------------------------------------------------------------|
| `akit`             | the `.akit` writer: sections, header, payload, atomic write          |
| `reader`           | the one checked `.akit` reader every consumer uses (`iter_stored`)   |
| `validate`         | its validation pass: structure, names, banks, dtypes, codecs, sizes  |
| `limits`           | the caps that bound what any reader decodes or allocates             |
| `codecs`           | byte codecs (lzma, zstd, zlib, brotli, raw), every decode bounded    |
| `ans`              | the rANS entropy coder of the int codes section                      |
| `ans_decoder_src`  | its standalone decoder, as source text (also pasted into loaders)    |
| `legacy`           | the two legacy `.ptz` formats in the wild, read by content           |
| `open`             | open any artifact by content, read bounded and fully validated       |
| `loader_template`, `loader_export` | the standalone loader users paste into a script     |

Imports the foundation, `plan` and `quantize`.
"""
