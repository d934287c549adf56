"""Decoding workers reuse the memory they free (``training.data.worker_heap``).

Measured by page faults, not time: a process that frees and re-allocates a chunk-sized
buffer should touch new pages only the first time once the thresholds are raised.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from training.data.worker_heap import keep_freed_memory

_CHURN = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    from training.data.worker_heap import keep_freed_memory
    if sys.argv[1] == "keep":
        assert keep_freed_memory()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for i in range(20):  # a chunk's worth of columns, made, freed, again: as a worker does
        column = np.arange(500_000 - 100 * i, dtype=np.int64)  # 4 MB, a little less each time
        doubled = column * 2
        rows = np.flatnonzero(doubled > 5)
        del column, doubled, rows
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)
PAGES_PER_ROUND = 500_000 * 8 // 4096  # of one column


def _faults(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _CHURN, mode], capture_output=True, text=True, check=True
    )
    return int(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_chunks_are_reused_without_new_page_faults() -> None:
    if not keep_freed_memory():  # (a Linux without glibc, e.g. musl: nothing to check)
        pytest.skip("no mallopt in this C library")
    default, kept = _faults("default"), _faults("keep")
    assert default > 20 * PAGES_PER_ROUND  # every round faults its columns in again
    assert kept < 5 * PAGES_PER_ROUND  # only the first round does
