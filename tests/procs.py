"""Killing a process group the way a test needs it: SIGKILL, then wait until no member still runs.

``os.killpg`` returns once the signal is sent; a worker inside a system call (writing a result file)
finishes that call before it dies. A test that looks at the run directory right after the kill can
miss a file written a moment later, so it waits for the group to be gone (zombies count as gone).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def _alive(pgid: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # ended while we looked
            continue
        state, _ppid, group = text[text.rindex(")") + 2:].split()[:3]
        if int(group) == pgid and state not in "ZX":
            pids.append(int(stat.parent.name))
    return pids


def kill_group(pgid: int, timeout: float = 60.0) -> None:
    """SIGKILL every process in group ``pgid`` and return once none of them runs."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while (left := _alive(pgid)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not left, f"processes {left} of group {pgid} still run {timeout:.0f} s after SIGKILL"
