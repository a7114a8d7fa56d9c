#!/usr/bin/env bash
# peer_sockeye.sh - imcap against Sockeye 1.18.106's captioning module, side by side in one run (bench/peer_sockeye.py).
#   bench/peer_sockeye.sh [--updates 300] [--extract-images 1024] [--only extraction|training|captioning ...]
# Installs the peer of ../shared/peer/sockeye1 into its own venv (kept between runs), exports its encoder, writes its
# data files and caches its features once (runs/sockeye-peer), then measures both tools one after the other.
# Locations: IMCAP_SHARED (default ../shared), SOCKEYE_VENV (default .sockeye-venv), WORK (default runs/sockeye-peer).
set -euo pipefail
cd "$(dirname "$0")/.."
export IMCAP_SHARED=${IMCAP_SHARED:-../shared}
export SOCKEYE_VENV=${SOCKEYE_VENV:-.sockeye-venv} WORK=${WORK:-runs/sockeye-peer}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
PEER=$IMCAP_SHARED/peer/sockeye1
[ -f "$PEER/run.sh" ] || { echo "peer_sockeye.sh: no Sockeye recipe at $PEER (set IMCAP_SHARED)" >&2; exit 1; }
step() { echo "== $(date +%H:%M:%S) $*" >&2; }

if ! "$SOCKEYE_VENV/bin/python" -c "import sockeye" 2> /dev/null; then
  step "install the peer into $SOCKEYE_VENV"; bash "$PEER/run.sh" install
fi
[ -f "$WORK/encoder/effnet_lite0-symbol.json" ] || { step "export the encoder"; bash "$PEER/run.sh" export; }
[ -f "$WORK/data/test.images" ] || { step "the peer's data files"; bash "$PEER/run.sh" prep; }
if [ ! -f "$WORK/features/all.features" ]; then
  step "the peer's features of all images (once; about 2 minutes)"; bash "$PEER/run.sh" extract
fi
step "measure"
exec .venv/bin/python bench/peer_sockeye.py --shared "$IMCAP_SHARED" --sockeye-venv "$SOCKEYE_VENV" --work "$WORK" "$@"
