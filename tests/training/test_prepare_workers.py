"""How many decoding processes ``prepare`` picks by itself (``--workers 0``)."""

from __future__ import annotations

import pytest

from training.data.cores import MAX_WORKERS, auto_workers, decoding_workers


@pytest.mark.parametrize(
    ("cores", "load", "runnable", "expected"),
    [
        (2, 0.6, 0, 2),  # quiet two-core machine: both cores, whatever the average says
        (2, 1.3, 0, 2),  # a job just ended: the average still trails, nothing runs now
        (2, 0.2, 1.0, 2),  # a snapshot caught a short task; the average knows better
        (2, 3.0, 2.0, 1),  # busy: serial
        (2, 0.9, 1.0, 1),  # one core taken: a pool of one only adds transfers
        (8, 0.0, 0.0, MAX_WORKERS),  # capped
        (8, 5.0, 5.4, 3),
        (1, 0.0, 0.0, 1),
        (4, None, None, 4),  # no readings at all (Windows): every core
        (4, 1.0, None, 3),  # no instant reading (macOS): the average decides
    ],
)
def test_decoding_workers_counts_the_cores_free_now(
    cores: int, load: float | None, runnable: float | None, expected: int
) -> None:
    assert decoding_workers(cores, load, runnable) == expected


def test_auto_workers_reads_this_machine() -> None:
    workers = auto_workers()
    assert 1 <= workers <= MAX_WORKERS
