"""``friendbot train`` and ``friendbot evaluate``: the model commands.

``train`` maps its options one to one onto ``training.model.finetune.TrainConfig`` and runs
``training.model.finetune.train``; ``evaluate`` runs ``training.model.evaluate.evaluate``;
``export-ct2`` runs ``training.model.ct2.export_ct2``. Heavy imports happen inside the
commands so ``friendbot --help`` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

_out = Console()


def register(app: typer.Typer) -> None:
    """Attach ``train`` and ``evaluate`` to the ``friendbot`` app."""
    app.command("train")(train)
    app.command("evaluate")(evaluate)
    app.command("export-ct2")(export_ct2)


def train(
    data: Annotated[
        Path,
        typer.Option(
            help="Prepared dataset dir (chat); a PAWS TSV or dir (paraphrase); a jokes CSV (joke)."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Model directory to write (atomically).")],
    base_model: Annotated[
        str,
        typer.Option(help="Hub id (google/flan-t5-base), local model dir, or `tiny` (offline)."),
    ] = "tiny",
    task: Annotated[str, typer.Option(help="chat | paraphrase | joke.")] = "chat",
    epochs: Annotated[
        int | None, typer.Option(help="Passes over the training data (default: tiny 8, else 3).")
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option(help="Optimizer steps (overrides --epochs).")
    ] = None,
    learning_rate: Annotated[
        float | None,
        typer.Option(
            "--lr", "--learning-rate", help="Peak LR (default: 1e-3 tiny or LoRA, else 3e-4)."
        ),
    ] = None,
    schedule: Annotated[str, typer.Option(help="cosine | linear | constant.")] = "cosine",
    warmup: Annotated[float, typer.Option(help="Warmup: a fraction if < 1, else steps.")] = 0.05,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.01,
    max_grad_norm: Annotated[float, typer.Option(help="Gradient clipping; 0 turns it off.")] = 1.0,
    token_budget: Annotated[
        int | None,
        typer.Option(help="Padded tokens per batch (default: 16384 on GPU, 2048 on CPU)."),
    ] = None,
    grad_accum: Annotated[int, typer.Option(help="Micro-batches per optimizer step.")] = 1,
    seed: Annotated[int, typer.Option(help="Seeds data order, init and dropout.")] = 0,
    min_examples: Annotated[
        int, typer.Option(help="Refuse fewer training pairs than this (default 20).")
    ] = 20,
    dropout: Annotated[
        float | None, typer.Option(help="Override the model's dropout (default: tiny 0).")
    ] = None,
    persona_prob: Annotated[
        float, typer.Option(help="Share of chat examples given the `reply as NAME:` hint.")
    ] = 0.5,
    max_source_length: Annotated[
        int | None,
        typer.Option(help="Source tokens (default: chat 512 (tiny 32), paraphrase 128, joke 32)."),
    ] = None,
    max_target_length: Annotated[
        int | None, typer.Option(help="Target tokens (default: chat 64, paraphrase 128, joke 128).")
    ] = None,
    eval_every: Annotated[int, typer.Option(help="Steps between validation runs.")] = 200,
    patience: Annotated[
        int, typer.Option(help="Stop after N validations without improvement; 0: never.")
    ] = 3,
    min_delta: Annotated[float, typer.Option(help="Smallest loss drop that counts.")] = 0.0,
    checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints.")] = 500,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the last checkpoint in OUT.partial/.")
    ] = False,
    keep_checkpoints: Annotated[
        bool, typer.Option("--keep-checkpoints", help="Keep OUT.partial/ after success.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace OUT if it exists.")
    ] = False,
    lora: Annotated[bool, typer.Option("--lora", help="Train LoRA adapters (peft).")] = False,
    lora_r: Annotated[int, typer.Option(help="LoRA rank.")] = 16,
    lora_alpha: Annotated[int, typer.Option(help="LoRA alpha.")] = 32,
    lora_dropout: Annotated[float, typer.Option(help="LoRA dropout.")] = 0.05,
    lora_targets: Annotated[
        str, typer.Option(help="Comma-separated module names to adapt.")
    ] = "q,k,v,o",
    merge_lora: Annotated[
        bool,
        typer.Option("--merge/--no-merge", help="Save merged weights, or the adapter alone."),
    ] = True,
    tiny_vocab: Annotated[int, typer.Option(help="tiny: SentencePiece vocabulary size.")] = 2000,
    precision: Annotated[
        str, typer.Option(help="auto (bf16 on capable GPUs) | bf16 | fp16 | fp32.")
    ] = "auto",
    compile_model: Annotated[
        bool, typer.Option("--compile", help="torch.compile the model (GPU).")
    ] = False,
    cpu: Annotated[bool, typer.Option("--cpu", help="Train on CPU even with a GPU.")] = False,
    threads: Annotated[
        int | None,
        typer.Option(help="CPU threads for torch (default: 1 for tiny, else one per core)."),
    ] = None,
    log_every: Annotated[int, typer.Option(help="Steps between metrics.jsonl records.")] = 10,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Fine-tune FLAN-T5 (or the offline tiny T5) on conversation -> response pairs.

    Runs unchanged as one process, under `torchrun --nproc_per_node N` or `accelerate launch`.
    """
    from training.model.finetune import TrainConfig
    from training.model.finetune import train as run_train

    config = TrainConfig(
        data=data,
        out=out,
        base_model=base_model,
        task=task,
        epochs=epochs,
        max_steps=max_steps,
        learning_rate=learning_rate,
        schedule=schedule,
        warmup=warmup,
        weight_decay=weight_decay,
        max_grad_norm=max_grad_norm,
        token_budget=token_budget,
        grad_accum=grad_accum,
        seed=seed,
        min_examples=min_examples,
        dropout=dropout,
        persona_prob=persona_prob,
        max_source_length=max_source_length,
        max_target_length=max_target_length,
        eval_every=eval_every,
        patience=patience,
        min_delta=min_delta,
        checkpoint_every=checkpoint_every,
        resume=resume,
        keep_checkpoints=keep_checkpoints,
        overwrite=overwrite,
        lora=lora,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        lora_targets=lora_targets,
        merge_lora=merge_lora,
        tiny_vocab=tiny_vocab,
        precision=precision,
        compile=compile_model,
        cpu=cpu,
        threads=threads,
        log_every=log_every,
        progress=progress,
    )
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
) -> None:
    """Convert MODEL_DIR to CTranslate2 in MODEL_DIR/ct2; the bot then uses it automatically.

    About 3x faster replies on CPU than HF generate. Rerun after retraining (stale: ignored).
    """
    from training.model.ct2 import export_ct2 as convert

    target = convert(model_dir, quantization=quantization)
    typer.echo(f"wrote {target} ({quantization})")
