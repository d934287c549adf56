"""Multi-process training: the unchanged `friendbot train` under torchrun, 2 CPU processes (gloo).

Two processes with one micro-batch each must train the same model as one process that
accumulates the same two micro-batches per step: that checks sharding, gradient averaging,
loss reduction and that only rank 0 writes the model directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.training.fixtures.chatdata import write_dataset

REPO = Path(__file__).resolve().parents[2]
ARGS = [
    "--max-steps", "6", "--token-budget", "512", "--eval-every", "3", "--log-every", "2",
    "--tiny-vocab", "300", "--max-source-length", "48", "--dropout", "0", "--no-progress",
]  # fmt: skip


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def metrics(model_dir: Path) -> list[dict]:
    lines = (model_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(ln).items() if k != "tokens_per_s"} for ln in lines]


def test_two_processes_equal_one_process_accumulating_two(tmp_path: Path) -> None:
    from transformers import AutoModelForSeq2SeqLM

    data = write_dataset(tmp_path / "data")
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    train = [sys.executable, "-m", "training.cli", "train", "--data", str(data), *ARGS]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    result = run([*torchrun, *train[1:], "--out", str(ddp)])
    run([*train, "--out", str(single), "--grad-accum", "2"])

    assert result.stdout.count("saved") == 1  # rank 0 reports and writes; rank 1 does not
    info = json.loads((ddp / "friendbot.json").read_text())
    assert info["world_size"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "ddp", "single"]

    a = AutoModelForSeq2SeqLM.from_pretrained(ddp).state_dict()
    b = AutoModelForSeq2SeqLM.from_pretrained(single).state_dict()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)
    got, want = metrics(ddp), metrics(single)
    assert [r.keys() for r in got] == [r.keys() for r in want]
    for r, w in zip(got, want, strict=True):
        assert r == pytest.approx(w, rel=1e-4)
