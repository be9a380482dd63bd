"""Copy the evidence benchmarks' tables into the README, so its Results section is what the scripts wrote.

    python benchmarks/report.py [--cache runs/evidence/quick] [--readme README.md] [--check]

Each table lives between ``<!-- evidence:NAME -->`` and ``<!-- /evidence:NAME -->`` in the README and
is replaced by ``<cache>/results/NAME.md`` (written by ``benchmarks/NAME.py``). ``--check`` changes
nothing and exits 1 when the README differs from the results.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"(<!-- evidence:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /evidence:(?P=name) -->)", re.S)


def sync(readme: str, results: Path) -> tuple[str, list[str]]:
    missing: list[str] = []

    def table(m: re.Match) -> str:
        f = results / f"{m.group('name')}.md"
        if not f.is_file():
            missing.append(str(f))
            return m.group(0)
        return m.group(1) + f.read_text().rstrip("\n") + "\n" + m.group(4)

    return BLOCK.sub(table, readme), missing


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", default="runs/evidence/quick")
    p.add_argument("--readme", default=str(ROOT / "README.md"))
    p.add_argument("--check", action="store_true")
    args = p.parse_args(argv)
    readme = Path(args.readme)
    text = readme.read_text()
    new, missing = sync(text, Path(args.cache) / "results")
    for m in missing:
        print(f"report: no {m}; run its benchmark first", file=sys.stderr)
    if args.check:
        return 1 if new != text else 0
    readme.write_text(new)
    print(f"report: {len(BLOCK.findall(text))} tables in {readme} from {args.cache}/results")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
