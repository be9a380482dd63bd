#!/usr/bin/env bash
# Set up .venv (if needed) and run the main job: the SP-NAS search on the built-in data set (CPU, minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -c constraints.txt -e .
out="${1:-runs/quickstart}"
if [ -f "$out/journal.jsonl" ]; then resume=--resume; else resume=; fi
exec .venv/bin/python -m spnas.search --ir examples/quickstart.yaml --out "$out" $resume
