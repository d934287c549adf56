"""``TrainConfig``: every option of ``friendbot train``, declared once.

Each field is the option's single declaration: ``friendbot train --FIELD-NAME`` and its help
come from it (training/config_cli.py), a ``--config`` TOML file uses the field names as keys,
and ``friendbot.json`` records all of them under ``hyperparameters``. Adding a field is the
whole job of adding an option. Imports nothing heavy: ``friendbot --help`` builds from it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from training.config_cli import option
from training.errors import InputError

TINY = "tiny"
TASKS = ("chat", "paraphrase", "joke")
# (max source tokens, max target tokens) per task when not given
TASK_LENGTHS = {"chat": (512, 64), "paraphrase": (128, 128), "joke": (32, 128)}
TINY_CHAT_SOURCE_LENGTH = 32
# The tiny model's time for the whole `train` command, in seconds (issue 12: five minutes on
# two cores): the loop trains as many steps as the rest of it holds, timed once the data is
# encoded (training.model.budget). A small chat reaches its --epochs first.
TINY_TIME_BUDGET = 300.0
# The tiny model's validation runs use at most this many pairs (a fixed seeded sample): on
# a CPU, five passes over a 4,295-pair validation split cost about 100 of the ~400 CPU s of a
# real-chat run, and 1,000 pairs still rank successive checkpoints (docs/training.md).
TINY_EVAL_EXAMPLES = 1000
# The tiny model's torch threads on CPU (at most; fewer on a smaller machine), with passive
# OpenMP waiting: measured on 2 cores (docs/training.md, "The five-minute budget").
TINY_MAX_THREADS = 2
# Fewer training pairs than this make a "model" that has learned nothing worth serving (one
# pair trained without complaint before); --min-examples overrides it for experiments.
MIN_EXAMPLES = 20


@dataclass
class TrainConfig:
    """Everything ``friendbot train`` can be told; stored in friendbot.json for reproduction."""

    data: Path = option(
        help="Prepared dataset dir (chat); a PAWS TSV or dir (paraphrase); a jokes CSV (joke)."
    )
    out: Path = option(help="Model directory to write (atomically).")
    base_model: str = option(
        TINY, help="Hub id (google/flan-t5-base), local model dir, or `tiny` (offline)."
    )
    task: str = option("chat", help="chat | paraphrase | joke.")
    epochs: int | None = option(
        None, help="Passes over the training data (default: tiny 8, else 3)."
    )
    max_steps: int | None = option(None, help="Optimizer steps (overrides --epochs).")
    train_tokens: int = option(
        0, help="Stop after about this many real tokens even within --epochs (0: no cap)."
    )
    time_budget: float | None = option(
        None,
        help="Seconds for the whole command: the loop gets as many steps as fit, timed after "
        "encoding (default: tiny 300, else 0: off). --max-steps turns it off.",
    )
    learning_rate: float | None = option(
        None,
        help="Peak LR (default: 1e-3 tiny or LoRA, else 3e-4).",
        flags=("--lr", "--learning-rate"),
    )
    schedule: str = option("cosine", help="cosine | linear | constant.")
    warmup: float = option(0.05, help="Warmup: a fraction if < 1, else steps.")
    weight_decay: float = option(0.01, help="AdamW (decoupled) weight decay.")
    max_grad_norm: float = option(1.0, help="Gradient clipping; 0 turns it off.")
    token_budget: int | None = option(
        None, help="Padded tokens per batch (default: 16384 on GPU, 2048 on CPU)."
    )
    grad_accum: int = option(1, help="Micro-batches per optimizer step.")
    seed: int = option(0, help="Seeds data order, init and dropout.")
    min_examples: int = option(
        MIN_EXAMPLES, help="Refuse fewer training pairs than this (default 20)."
    )
    dropout: float | None = option(None, help="Override the model's dropout (default: tiny 0).")
    persona_prob: float = option(
        0.5, help="Share of chat examples given the `reply as NAME:` hint."
    )
    max_source_length: int | None = option(
        None, help="Source tokens (default: chat 512 (tiny 32), paraphrase 128, joke 32)."
    )
    max_target_length: int | None = option(
        None, help="Target tokens (default: chat 64, paraphrase 128, joke 128)."
    )
    eval_every: int = option(200, help="Steps between validation runs.")
    eval_examples: int | None = option(
        None,
        help="Validate on at most this many pairs, a fixed seeded sample (default: tiny "
        f"{TINY_EVAL_EXAMPLES:,}, else 0: all).",
    )
    patience: int = option(3, help="Stop after N validations without improvement; 0: never.")
    min_delta: float = option(0.0, help="Smallest loss drop that counts.")
    checkpoint_every: int = option(500, help="Steps between checkpoints.")
    resume: bool = option(False, help="Continue from the last checkpoint in OUT.partial/.")
    keep_checkpoints: bool = option(False, help="Keep OUT.partial/ after success.")
    overwrite: bool = option(False, help="Replace OUT if it exists.")
    lora: bool = option(False, help="Train LoRA adapters (peft).")
    lora_r: int = option(16, help="LoRA rank.")
    lora_alpha: int = option(32, help="LoRA alpha.")
    lora_dropout: float = option(0.05, help="LoRA dropout.")
    lora_targets: str = option("q,k,v,o", help="Comma-separated module names to adapt.")
    merge_lora: bool = option(
        True, help="Save merged weights, or the adapter alone.", flags=("--merge/--no-merge",)
    )
    tiny_vocab: int = option(2000, help="tiny: SentencePiece vocabulary size.")
    precision: str = option("auto", help="auto (bf16 on capable GPUs) | bf16 | fp16 | fp32.")
    compile: bool = option(False, help="torch.compile the model (GPU).")
    cpu: bool = option(False, help="Train on CPU even with a GPU.")
    threads: int | None = option(
        None, help="CPU threads for torch (default: tiny 2 (fewer cores: all), else one per core)."
    )
    log_every: int = option(10, help="Steps between metrics.jsonl records.")
    progress: bool = option(True, help="Show a progress bar.")

    def __post_init__(self) -> None:
        self.data, self.out = Path(self.data), Path(self.out)
        self._check()
        self._fill_defaults()

    def hyperparameters(self) -> dict[str, Any]:
        """Every field, JSON-ready: what friendbot.json records to reproduce the run."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}

    def _check(self) -> None:
        if self.task not in TASKS:
            raise InputError(f"--task {self.task}: unknown task (choose from {', '.join(TASKS)})")
        if self.schedule not in ("cosine", "linear", "constant"):
            raise InputError(f"--schedule {self.schedule}: choose cosine, linear or constant")
        if self.precision not in ("auto", "bf16", "fp16", "fp32"):
            raise InputError(f"--precision {self.precision}: choose auto, bf16, fp16 or fp32")
        positive = {
            "--epochs": self.epochs if self.epochs is not None else 1,
            "--grad-accum": self.grad_accum,
            "--min-examples": self.min_examples,
            "--eval-every": self.eval_every,
            "--checkpoint-every": self.checkpoint_every,
            "--log-every": self.log_every,
            "--threads": self.threads if self.threads is not None else 1,
            "--max-steps": self.max_steps if self.max_steps is not None else 1,
            "--token-budget": self.token_budget if self.token_budget is not None else 1,
            "--learning-rate": self.learning_rate if self.learning_rate is not None else 1,
        }
        for name, value in positive.items():
            if value <= 0:
                raise InputError(f"{name} {value}: must be positive")
        if self.eval_examples is not None and self.eval_examples < 0:
            raise InputError(f"--eval-examples {self.eval_examples}: must not be negative (0: all)")
        if self.train_tokens < 0:
            raise InputError(
                f"--train-tokens {self.train_tokens}: must not be negative (0: no cap)"
            )
        if self.time_budget is not None and not 0 <= self.time_budget < float("inf"):
            raise InputError(f"--time-budget {self.time_budget}: seconds, 0 or more (0: off)")
        if not 0.0 <= self.persona_prob <= 1.0:
            raise InputError(f"--persona-prob {self.persona_prob}: must be within [0, 1]")
        if self.lora and not self.merge_lora and self.base_model == TINY:
            raise InputError(
                "--no-merge: an unmerged adapter needs a base model that can be loaded again "
                "(a hub id or a directory); `tiny` is built in memory"
            )

    def _fill_defaults(self) -> None:
        """FLAN-T5 fine-tuning as usual; the tiny model learns from scratch in a few CPU minutes,
        which (measured on the sample chat, docs/training.md) wants more epochs, no dropout and
        a short context window (the last message or two)."""
        tiny = self.base_model == TINY
        default_src, default_tgt = TASK_LENGTHS[self.task]
        if tiny and self.task == "chat":
            default_src = TINY_CHAT_SOURCE_LENGTH
        self.max_source_length = self.max_source_length or default_src
        self.max_target_length = self.max_target_length or default_tgt
        if self.epochs is None:
            self.epochs = 8 if tiny else 3
        if self.time_budget is None:
            self.time_budget = TINY_TIME_BUDGET if tiny else 0.0
        if self.eval_examples is None:
            self.eval_examples = TINY_EVAL_EXAMPLES if tiny else 0
        if self.dropout is None and tiny:
            self.dropout = 0.0
        if self.learning_rate is None:
            self.learning_rate = 1e-3 if tiny or self.lora else 3e-4
