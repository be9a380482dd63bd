"""A real full disk and a real read-only run directory (a small tmpfs), with the formula-driven evaluator.

The tests need to mount a tmpfs (root, or a user namespace that allows it); where that is refused
they are skipped, and the injected-fault tests beside them still run.
"""

from __future__ import annotations

import errno
import subprocess
import uuid
from pathlib import Path

import pytest

from spnas.errors import SpnasError
from tests.search.test_loop import events, run


@pytest.fixture
def tmpfs(tmp_path):
    mnt = tmp_path / f"fs-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if p.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")

    def remount(opts: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{opts}", str(mnt)], check=True)

    yield mnt, remount
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def decisions(evs):
    return [(e["event"], e.get("id"), e.get("generation")) for e in evs if e["event"] in ("accepted", "rejected", "best", "stopped")]


def test_a_real_full_disk_then_a_read_only_directory_lose_nothing(tmp_path, tmpfs):
    mnt, remount = tmpfs
    ref, ref_events, _ = run(tmp_path, "ref")  # the same search on a roomy disk (its run directory is ~27 MB)

    with pytest.raises((SpnasError, OSError)) as e:  # 6 MB fill up part-way
        run(mnt, workers={"backend": "inline", "retries": 1})
    text = str(e.value)
    assert "No space left on device" in text or "out of disk" in text, text
    journal = mnt / "run" / "journal.jsonl"
    before = journal.read_bytes()
    n_before = len(before.splitlines())
    assert 0 < n_before < len(ref_events)

    remount("ro")  # the disk is now read-only: the resume stops at once and changes nothing
    with pytest.raises(OSError) as e:
        run(mnt, resume=True)
    assert e.value.errno == errno.EROFS
    assert journal.read_bytes() == before

    remount("rw,size=96m")  # space is freed: the resume reaches the decisions of the run that never lacked it
    summary, evs, ev = run(mnt, resume=True)
    assert summary["best_id"] == ref["best_id"]
    assert decisions(evs) == decisions(ref_events)
    assert journal.read_bytes().splitlines()[: n_before - 1] == before.splitlines()[: n_before - 1]  # nothing journaled is lost
    evaluated = [e["id"] for e in evs if e["event"] == "evaluated"]
    assert len(evaluated) == len(set(evaluated)), "a candidate was evaluated twice"
    assert (mnt / "run" / "best" / "summary.json").is_file()


def test_a_full_disk_in_the_driver_mid_journal_line(tmp_path, monkeypatch):
    """ENOSPC while the driver writes a journal line: half a line is on disk; the resume cuts it and goes on."""
    from spnas.search import journal as journal_mod

    ref, ref_events, _ = run(tmp_path, "ref")
    real = journal_mod.Journal.append

    def full_disk(self, event, **data):
        if event == "accepted":
            self._f.write('{"event": "accepted", "id": "g0')
            self._f.flush()
            raise OSError(errno.ENOSPC, "No space left on device (injected)")
        return real(self, event, **data)

    monkeypatch.setattr(journal_mod.Journal, "append", full_disk)
    with pytest.raises(OSError, match="No space left"):
        run(tmp_path)
    monkeypatch.setattr(journal_mod.Journal, "append", real)
    summary, evs, ev = run(tmp_path, resume=True)
    assert summary["best_id"] == ref["best_id"] and decisions(evs) == decisions(ref_events)
    assert all(line.endswith("}") for line in (Path(tmp_path) / "run" / "journal.jsonl").read_text().splitlines())
    assert events(tmp_path / "run") == evs
