"""``python -m spnas.search --ir start.yaml [--out DIR] [--resume] [--seed N] [--workers N] [--backend local|ray]``

Runs the SP-NAS search described by ``start.yaml`` and prints a summary table. Bad input prints one
line (what, where, what to do) and exits 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from spnas.errors import SpnasError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m spnas.search", description=__doc__.split("\n\n")[1])
    p.add_argument("--ir", required=True, help="the search config (start.yaml); see examples/quickstart.yaml")
    p.add_argument("--out", default=None, help="run directory (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its journal")
    p.add_argument("--seed", type=int, default=None, help="override the config's seed")
    p.add_argument("--workers", type=int, default=None, help="override workers.n")
    p.add_argument("--backend", choices=["local", "ray"], default=None, help="override workers.backend")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    try:
        from spnas.search.config import load_config
        from spnas.search.runner import Search

        cfg = load_config(args.ir)
        if args.seed is not None:
            cfg = dataclasses.replace(cfg, seed=args.seed)
        w = cfg.workers
        if args.workers is not None:
            w = dataclasses.replace(w, n=args.workers)
        if args.backend is not None:
            w = dataclasses.replace(w, backend=args.backend)
        cfg = dataclasses.replace(cfg, workers=w)
        out = Path(args.out) if args.out else Path("runs") / Path(args.ir).stem
        summary = Search(cfg, out, resume=args.resume, quiet=True if args.quiet else None).run()
    except SpnasError as e:
        print(f"spnas: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("spnas: interrupted; continue with --resume", file=sys.stderr)
        return 130
    width = max(len(k) for k in summary)
    print(f"SP-NAS search finished: {out}")
    for k, v in summary.items():
        if k != "metrics":
            print(f"  {k.ljust(width)}  {v}")
    verdict = "beats" if summary["improved"] else "does NOT beat"
    print(f"  the best net {verdict} the start net: {summary['best_metric']:.4f} vs {summary['start_metric']:.4f} {summary['metric']}")
    print(json.dumps({"summary": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
