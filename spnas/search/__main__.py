"""``spnas search start.yaml [--out DIR] [--resume] [--seed N] [--workers N] [--backend local|ray|inline] [--address ADDR]``

(also ``python -m spnas.search --ir start.yaml ...``). Runs the SP-NAS search described by
``start.yaml`` and prints the logbook and a summary. Bad input prints one line (what, where, what to
do) and exits 2; ``--schema`` prints the config's JSON schema.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from spnas.errors import SpnasError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="the search config (start.yaml); `spnas init` writes one")
    p.add_argument("--ir", dest="ir", help="the search config, as a flag (what `python -m spnas.search --ir start.yaml` takes)")
    p.add_argument("--out", default=None, help="run directory (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its journal")
    p.add_argument("--seed", type=int, default=None, help="override the config's seed")
    p.add_argument("--workers", type=int, default=None, help="override workers.n")
    p.add_argument("--backend", choices=["local", "ray", "inline"], default=None, help="override workers.backend")
    p.add_argument("--address", default=None, help="the Ray cluster (ray backend; default: workers.address, RAY_ADDRESS, else a local one)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--schema", action="store_true", help="print the JSON schema of the config and exit")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error, not one line")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m spnas.search", description=__doc__.split("\n\n")[1])
    add_arguments(p)
    return run(p.parse_args(argv), p)


def run(args: argparse.Namespace, p: argparse.ArgumentParser) -> int:
    if args.schema:
        from spnas.search.config import schema

        print(json.dumps(schema(), indent=1))
        return 0
    if args.config and args.ir and args.config != args.ir:
        p.error("give the config once: as the argument or as --ir")
    args.ir = args.config or args.ir
    if not args.ir:
        p.error("the search config (start.yaml) is required; `spnas init` writes one")
    try:
        from spnas.search.config import load_config
        from spnas.search.runner import Search

        cfg = load_config(args.ir)
        changes = {k: v for k, v in {"n": args.workers, "backend": args.backend, "address": args.address}.items() if v is not None}
        if changes or args.seed is not None:
            cfg = cfg.replace(**({"workers": changes} if changes else {}), **({"seed": args.seed} if args.seed is not None else {}))
        out = Path(args.out) if args.out else Path("runs") / Path(args.ir).stem
        search = Search(cfg, out, resume=args.resume, quiet=True if args.quiet else None)
        summary = search.run()
    except (SpnasError, OSError) as e:  # bad input, or the machine (a full disk, a read-only directory): one line
        if args.debug:
            raise
        where = f"{e.filename}: " if isinstance(e, OSError) and e.filename else ""
        text = f"{where}{e.strerror}" if isinstance(e, OSError) and e.strerror else str(e)
        print(f"spnas: error: {text}" + (" (the journal keeps what was done: fix it and --resume)" if isinstance(e, OSError) else ""),
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("spnas: interrupted; continue with --resume", file=sys.stderr)
        return 130
    print(search.logbook_text())
    print(f"SP-NAS search finished: {out}")
    width = max(len(k) for k in summary)
    for k, v in summary.items():
        if k not in ("metrics", "accepted"):
            print(f"  {k.ljust(width)}  {v}")
    noise = summary.get("noise_std")
    for a in summary["accepted"]:
        vs = f"{a['gain']:+.4f} over {a['baseline']}" if a.get("gain") is not None else "n/a"
        within = "" if noise is None or a.get("gain") is None else (" (within the noise)" if a["gain"] <= noise else " (above the noise)")
        print(f"  accepted {a['id']}: {a['code']}  {summary['metric']} {a['metric']:.4f}, gain {vs}"
              f"{f', noise std {noise:.4f}' if noise is not None else ''}{within}")
    verdict = "beats" if summary["improved"] else "does NOT beat"
    lower = " (lower is better; a gain is a drop)" if summary.get("lower_is_better") else ""
    print(f"  the best net {verdict} the start net: {summary['best_metric']:.4f} vs {summary['start_metric']:.4f} {summary['metric']}{lower}"
          " (after more training; the gains above compare equal training)")
    print(json.dumps({"summary": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
