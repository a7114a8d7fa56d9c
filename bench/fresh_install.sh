#!/usr/bin/env bash
# Wall-clock seconds of a fresh install: scripts/install.sh of SOURCE (a checkout; default this one) into a new
# virtual environment with pip's cache off, so every package is downloaded (and, where it is a source archive,
# built) as on a new machine. Prints the figure and appends a row to docs/benchmarks.md.
#
#   bench/fresh_install.sh [SOURCE] [LABEL]
set -euo pipefail
cd "$(dirname "$0")/.."
SOURCE=$(cd "${1:-.}" && pwd)
LABEL=${2:-$(git -C "$SOURCE" rev-parse --short HEAD 2>/dev/null || echo "$SOURCE")}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s.%N)
IMCAP_VENV="$tmp/venv" PIP_NO_CACHE_DIR=1 bash "$SOURCE/scripts/install.sh" > "$tmp/install.log" 2>&1 \
  || { tail -20 "$tmp/install.log"; exit 1; }
seconds=$(python3 -c "import sys; print('%.0f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$start" "$(date +%s.%N)")
echo "fresh install seconds ($LABEL)	$seconds"
python3 - "$LABEL" "$seconds" <<'PY'
import sys
sys.path.insert(0, "bench")
from benchlib import append_row
append_row("docs/benchmarks.md", "Fresh install (bench/fresh_install.sh)", ["install.sh of", "seconds"],
           "bench/fresh_install.sh SOURCE", [sys.argv[1], sys.argv[2]])
PY
