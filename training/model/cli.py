"""``friendbot train``, ``friendbot evaluate`` and ``friendbot export-ct2``: the model commands.

``train``'s options are the fields of ``training.model.config.TrainConfig`` (declared there
once, help included; ``--config FILE`` reads them from TOML) and it runs
``training.model.finetune.train``; ``evaluate`` runs ``training.model.evaluate.evaluate``;
``export-ct2`` runs ``training.model.ct2.export_ct2``. Heavy imports happen inside the
commands so ``friendbot --help`` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from training.config_cli import config_command
from training.model.config import TrainConfig

_out = Console()


def register(app: typer.Typer) -> None:
    """Attach ``train``, ``evaluate`` and ``export-ct2`` to the ``friendbot`` app."""
    app.command("train")(config_command(train, config_file=True))
    app.command("evaluate")(evaluate)
    app.command("export-ct2")(export_ct2)


def train(config: TrainConfig) -> None:
    """Fine-tune FLAN-T5 (or the offline tiny T5) on conversation -> response pairs.

    Runs unchanged as one process, under `torchrun --nproc_per_node N` or `accelerate launch`.
    """
    from training.model.finetune import train as run_train

    result = run_train(config)
    _print_train_summary(result)


def _print_train_summary(model_dir: Path) -> None:
    import os

    from training.model.model_dir import read_info

    if os.environ.get("RANK", "0") != "0":  # torchrun / accelerate launch: rank 0 reports
        return
    info = read_info(model_dir)
    m = info["metrics"]
    val = m["validation_loss"]
    _out.print(
        f"[green]saved[/green] {model_dir}  steps {m['steps']}  "
        f"train loss {m['train_loss']:.3f}  "
        f"validation loss {'-' if val is None else f'{val:.3f}'}  "
        f"{m['tokens_per_s']:,.0f} tok/s  {m['train_seconds']:.0f} s",
        highlight=False,
    )


def evaluate(
    model: Annotated[Path, typer.Option(help="Model directory written by `friendbot train`.")],
    data: Annotated[Path, typer.Option(help="Prepared dataset directory.")],
    split: Annotated[str, typer.Option(help="test | validation | train.")] = "test",
    out: Annotated[
        Path | None, typer.Option(help="Report directory (default: MODEL/eval-SPLIT).")
    ] = None,
    generate: Annotated[
        bool,
        typer.Option("--generate/--no-generate", help="Generate replies (else loss only)."),
    ] = True,
    limit: Annotated[int | None, typer.Option(help="Score only the first N examples.")] = None,
    batch_size: Annotated[int, typer.Option(help="Generation batch size.")] = 32,
) -> None:
    """Loss, perplexity, ROUGE-L, speaker accuracy and distinct-1/2, next to two baselines."""
    from training.model.evaluate import evaluate as run_evaluate

    report = run_evaluate(
        model, data, split, out, do_generate=generate, limit=limit, batch_size=batch_size
    )
    _print_eval_table(report)


def _print_eval_table(report: dict[str, Any]) -> None:
    from rich.table import Table

    from training.model.evaluate import metric_rows

    top = report["baselines"]["most_frequent_speaker"]["speaker"]
    table = Table(title=f"{report['split']} split, {report['examples']} examples")
    table.add_column("metric")
    table.add_column("model", justify="right")
    table.add_column(f"most frequent speaker ({top})", justify="right")
    table.add_column("repeat last line", justify="right")
    for name, values in metric_rows(report):
        table.add_row(name, *values)
    _out.print(table)
    _out.print(f"report: {report['out_dir']}", highlight=False)


def export_ct2(
    model_dir: Annotated[
        Path, typer.Argument(help="Model directory written by friendbot train (or models/current).")
    ],
    quantization: Annotated[
        str,
        typer.Option(
            help="Weight type: int8 (fast on CPU, the default), int8_float16 for GPUs, float16, "
            "float32 (exact, slower)."
        ),
    ] = "int8",
    vocabulary_map: Annotated[
        bool,
        typer.Option(
            "--vocabulary-map/--no-vocabulary-map",
            help="Decode replies over the pieces the chat was trained on (reply_vocabulary.json, "
            "saved by friendbot train) plus those in the prompt: faster steps. Off: every piece.",
        ),
    ] = True,
) -> None:
    """Convert MODEL_DIR to CTranslate2 in MODEL_DIR/ct2; the bot then uses it automatically.

    About 3x faster replies on CPU than HF generate. Rerun after retraining (stale: ignored).
    """
    from training.model.ct2 import export_ct2 as convert
    from training.model.model_dir import read_export_meta

    target = convert(model_dir, quantization=quantization, vocabulary_map=vocabulary_map)
    pieces = read_export_meta(target).get("vocabulary_map")
    scope = f"replies over {pieces:,} pieces + the prompt's" if pieces else "whole vocabulary"
    typer.echo(f"wrote {target} ({quantization}; {scope})")
