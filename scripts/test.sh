#!/usr/bin/env bash
# Set up .venv (if needed) and run the default test suite (CPU-only, quick; `-m slow` for the long ones).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -c constraints.txt -e '.[test,cluster,export]'
exec .venv/bin/python -m pytest "$@"
