"""`artifactkit export-loader`: write the standalone `.akit` loader module."""

from __future__ import annotations

import click

from artifactkit.commands._framework import emit_json, guarded, note
from artifactkit.commands._options import EXISTING_FILE, debug_option, json_option, output_option
from artifactkit.errors import InputError
from artifactkit.format.loader_export import (
    ALL_CODECS,
    DEFAULT_CODECS,
    build_loader,
    loader_for_artifact,
    loader_sizes,
)
from artifactkit.format.reader import read_artifact
from artifactkit.io import atomic_write_text, refuse_overwriting_inputs


def _help_text() -> str:
    sizes = loader_sizes()
    return (
        "Write a standalone Python module that loads an .akit file into a state dict: "
        "load_artifact(path) -> dict[str, torch.Tensor], dequantized, banks restored, original dtypes, "
        "bit-identical to 'artifactkit unpack'. It needs only torch, numpy and the standard library "
        "(plus zstandard / brotli when those codecs are included) and imports nothing from artifactkit, "
        "so you can paste it into a training script.\n\n"
        f"Size: {sizes['lzma']:,} bytes with --codecs lzma, {sizes['default']:,} bytes with the default "
        f"codecs ({','.join(DEFAULT_CODECS)}; the ans entropy decoder is most of the difference). "
        "Those bytes count against the budget: pasted into a script you pass to 'check --code', they are "
        "counted with it; shipped as its own file, pass that file to 'check --code' too; otherwise give "
        "'check --loader-bytes N'. 'size-report --count-loader' counts the loader for that artifact.\n\n"
        "Without -o the module is printed on stdout."
    )


@click.command("export-loader", help=_help_text())
@output_option("the loader module", required=False, default_text=" Default: print it on stdout.")
@click.option("--codecs", "codec_list", default=None, metavar="all|CODEC,...",
              help=f"Codecs the loader can read, from {', '.join(ALL_CODECS)}. "
                   f"Default: {','.join(DEFAULT_CODECS)}. Fewer codecs, fewer bytes.")
@click.option("--artifact", "artifact", type=EXISTING_FILE, default=None,
              help="Include exactly what this .akit file needs: its codecs, and LQER support if it has "
                   "low-rank corrections (the smallest loader for it).")
@click.option("--lowrank", is_flag=True,
              help="Also read format-version-2 artifacts and apply their LQER low-rank corrections "
                   "(written by 'fit --lqer' and 'pack --recipe record'); about 0.9 KB more.")
@json_option
@debug_option
@guarded
def export_loader_command(output: str | None, codec_list: str | None, artifact: str | None, lowrank: bool,
                          as_json: bool) -> None:
    refuse_overwriting_inputs({"-o": output}, [artifact])
    if artifact and codec_list:
        raise InputError("--artifact and --codecs: pass one of them; --artifact picks the codecs it uses")
    if artifact:
        loader = loader_for_artifact(read_artifact(artifact).header)
    else:
        loader = build_loader(codec_list, lowrank=lowrank)
    if output:
        atomic_write_text(output, loader.text)
    if as_json:
        emit_json({"path": output, "loader_bytes": loader.size_bytes, "codecs": list(loader.codecs),
                   "lowrank": loader.lowrank,
                   "third_party_modules": ["torch", "numpy", *loader.third_party_modules]})
    elif output:
        note(f"wrote {output}: {loader.size_bytes:,} bytes, codecs {', '.join(loader.codecs)}; "
             f"count it with 'artifactkit check ARTIFACT --code {output}' (or --loader-bytes {loader.size_bytes})")
    else:
        click.echo(loader.text, nl=False)


COMMANDS = [export_loader_command]
