"""Command line of the trainer (`python -m train`, console script `artifactkit-train`).

    python -m train --preset tiny --iterations 200 --out runs/tiny [--jepa-weight 0] ...
    python -m train prepare-data TEXT... --out DIR [--tokenizer MODEL] [--documents paragraph]
    python -m train prepare-data --embedded --out DIR

Every `TrainConfig` / `ModelConfig` field is an option (generated from the dataclasses,
with their help text); precedence is preset < `--config FILE.toml` < options. This
module only parses and prints; the work happens in `train.loop` and `train.data`.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import Any

import click

from train.config import PRESETS, ConfigError, option_fields, resolve_config

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


def _fail(message: str, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def _guard(body: Callable[[], Any], debug: bool) -> Any:
    from eval.shards import ShardError
    from train.checkpoint import CheckpointError
    from train.data import DataError
    from train.loop import TrainingError

    try:
        return body()
    except (ConfigError, DataError, ShardError, CheckpointError, TrainingError) as exc:
        _fail(str(exc), debug)
    except KeyboardInterrupt:
        _fail("interrupted; the last saved training state is in OUT/train_state.pt (continue with --resume)", debug)
    except Exception as exc:  # noqa: BLE001 - last line of defence: one line, no traceback
        _fail(f"unexpected {type(exc).__name__}: {exc}; rerun with --debug and report the traceback", debug)


def _generated_options(command: Callable) -> Callable:
    for section, name, python_type, help_text in reversed(option_fields()):
        flag = "--" + name.replace("_", "-")
        label = f"[model] {help_text}" if section == "model" else help_text
        if python_type is bool:
            command = click.option(f"{flag}/--no-{name.replace('_', '-')}", name, default=None, help=label)(command)
        else:
            command = click.option(flag, name, type=python_type, default=None, help=label)(command)
    return command


@click.command(context_settings=CONTEXT)
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default=None,
              help="Defaults to start from (tiny: CPU minutes; mid: 4x384 whose matrices artifactkit int6-quantizes, "
                   "<= 15 CPU minutes; seed11: the seed's 11x512 A/B run; seed20). Default tiny.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="TOML file: TrainConfig fields at top level, ModelConfig fields under [model].")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@_generated_options
def train_command(preset: str | None, config_path: str | None, debug: bool, **options: Any) -> None:
    """Train the context-encoder GPT (JEPA self-distillation, or vanilla cross-entropy with
    --jepa-weight 0). Writes OUT/ckpt.pt, OUT/log.jsonl, OUT/run.json and OUT/train_state.pt.
    Without --data the embedded corpus (Python's own documentation) is prepared into OUT.
    Under torchrun, only RANK / WORLD_SIZE / LOCAL_RANK / MASTER_* come from the environment."""
    model_names = {name for section, name, _, _ in option_fields() if section == "model"}
    overrides: dict[str, Any] = {k: v for k, v in options.items() if v is not None and k not in model_names}
    model_overrides = {k: v for k, v in options.items() if v is not None and k in model_names}
    if model_overrides:
        overrides["model"] = model_overrides

    def body() -> None:
        from train.loop import run_training

        config = resolve_config(preset, config_path, overrides)
        run_training(config)

    _guard(body, debug)


@click.command(context_settings=CONTEXT)
@click.argument("texts", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--embedded", is_flag=True, help="Use the embedded corpus (Python's documentation) instead of TEXTS.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Directory for tokenizer.model and data/{train,val}_*.bin.")
@click.option("--tokenizer", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Existing SentencePiece model to use (default: train one with the challenge's settings).")
@click.option("--documents", type=click.Choice(["file", "paragraph"]), default="file", show_default=True,
              help="What counts as one document (each gets a BOS): a whole file or a blank-line paragraph.")
@click.option("--val-fraction", type=float, default=0.1, show_default=True,
              help="Fraction of documents (chosen by content hash) held out for validation.")
@click.option("--shard-tokens", type=int, default=100_000_000, show_default=True, help="Tokens per shard file.")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
def prepare_command(texts: tuple[str, ...], embedded: bool, out: str, tokenizer: str | None, documents: str,
                    val_fraction: float, shard_tokens: int, debug: bool) -> None:
    """Write FineWeb-format shards (BOS before every document) and, unless --tokenizer is
    given, a SentencePiece BPE tokenizer trained with the challenge's settings."""
    from train.data import prepare_embedded_corpus, prepare_text_files

    if embedded == bool(texts):
        _fail("give either text files or --embedded (exactly one); see --help", debug)

    def body() -> None:
        if embedded:
            prepared = prepare_embedded_corpus(out, tokenizer, val_fraction, shard_tokens)
        else:
            prepared = prepare_text_files(texts, out, tokenizer, documents, val_fraction, shard_tokens)
        click.echo(f"tokenizer {prepared.tokenizer}")
        click.echo(f"train {prepared.train_glob} ({prepared.train_tokens:,} tokens)")
        click.echo(f"val   {prepared.val_glob} ({prepared.val_tokens:,} tokens)")

    _guard(body, debug)


def main(argv: list[str] | None = None) -> None:
    """Entry point: `prepare-data` as the first argument selects data preparation,
    anything else is a training run."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["prepare-data"]:
        prepare_command.main(args[1:], prog_name="python -m train prepare-data")
    else:
        train_command.main(args, prog_name="python -m train")


if __name__ == "__main__":
    main()
