"""Compare two runs' decisions: the same events, ids, codes and metrics, in order (times, seconds, paths ignored).

    python scripts/compare_journals.py RUN_A RUN_B [--ignore FIELD ...]

Prints the first difference and exits 1, or the number of events compared and exits 0. Only what differs
between two runs of the same seed by nature (times, seconds) is ignored: the trained weights' hashes
are compared too.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from spnas.rundir import RunDir

IGNORED = {"time", "seconds", "wall_seconds", "device_hours"}


def decisions(run: Path, ignored: set[str]) -> list[dict]:
    out = []
    for line in RunDir(run).journal.read_text().splitlines():
        ev = json.loads(line)
        out.append({k: v for k, v in ev.items() if k not in ignored})
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--ignore", nargs="*", default=[], help="more fields to leave out (a field one version added)")
    args = p.parse_args()
    a, b = (decisions(Path(r), IGNORED | set(args.ignore)) for r in (args.a, args.b))
    for i, (x, y) in enumerate(zip(a, b), start=1):
        if x != y:
            keys = sorted(k for k in set(x) | set(y) if x.get(k) != y.get(k))
            print(f"event {i} differs ({x.get('event')} {x.get('id')}): " + "; ".join(f"{k}: {x.get(k)!r} vs {y.get(k)!r}" for k in keys)[:2000])
            return 1
    if len(a) != len(b):
        print(f"one journal is longer: {len(a)} vs {len(b)} events")
        return 1
    print(f"{len(a)} events: the same decisions, ids and metrics")
    return 0


if __name__ == "__main__":
    sys.exit(main())
