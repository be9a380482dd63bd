#!/usr/bin/env bash
# A new user's path, checked: `pip install .` (not editable) into a fresh venv, then `spnas init` and
# `spnas search` in an empty directory outside the clone complete the quick start; then predict and export.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
"$work/venv/bin/python" -m pip install -q -c "$repo/constraints.txt" "$repo"
mkdir "$work/exp" && cd "$work/exp"
spnas="$work/venv/bin/spnas"
"$spnas" init
"$spnas" search start.yaml --out run --quiet > search.log
tail -n 4 search.log | head -n 3
test -f run/best/detector.json
"$spnas" predict run run/data/images --out preds.json
"$spnas" export run --format torchscript --out det.pt
echo "check_install: ok (installed from $repo into a fresh venv; searched, predicted and exported in $work/exp)"
