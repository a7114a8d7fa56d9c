#!/usr/bin/env bash
# Quality benchmark: the full Flickr8k recipe (scripts/flickr8k.sh full: features from the cache, 60 minutes of
# training, checkpoint/beam/length-penalty chosen on val, the test split scored once), then one figure per line
# and a row appended to docs/benchmarks.md.
#
#   bench/flickr8k_quality.sh            # ~75 minutes on 2 CPU cores; run it alone on the machine
#
# Environment: as scripts/flickr8k.sh (PYTHON, IMCAP_SHARED, RUNS, ENCODER, FEATURES, TRAIN_ARGS, MODELS,
# SELF_CRITICAL_SECONDS, SCST_ARGS, AUGMENTATIONS, SELECT_ARGS, SELECT_METRIC, FINE_TUNE_FROM, FINE_TUNE_ARGS,
# ENSEMBLE_XENT).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
RUNS=${RUNS:-runs}
OUT=$RUNS/flickr8k-full${FINE_TUNE_FROM:+-ft-$FINE_TUNE_FROM}   # where scripts/flickr8k.sh writes
mkdir -p "$OUT"
start=$(date +%s)
scripts/flickr8k.sh full 2>&1 | tee "$OUT"/bench.log
total=$(( $(date +%s) - start ))
$PY bench/report_quality.py --run "$OUT" --log "$OUT"/bench.log --total-seconds "$total" --models "${MODELS:-1}" \
    --augmentations "${AUGMENTATIONS:-}" ${ENSEMBLE_XENT:+--ensemble-xent} \
    --command "${MODELS:+MODELS=$MODELS }${ENSEMBLE_XENT:+ENSEMBLE_XENT=$ENSEMBLE_XENT }${SELF_CRITICAL_SECONDS:+SELF_CRITICAL_SECONDS=$SELF_CRITICAL_SECONDS }${SCST_ARGS:+SCST_ARGS=\"$SCST_ARGS\" }${ENCODER:+ENCODER=$ENCODER }${AUGMENTATIONS:+AUGMENTATIONS=$AUGMENTATIONS }${SELECT_ARGS:+SELECT_ARGS=\"$SELECT_ARGS\" }${SELECT_METRIC:+SELECT_METRIC=$SELECT_METRIC }${FINE_TUNE_FROM:+FINE_TUNE_FROM=$FINE_TUNE_FROM }${FINE_TUNE_ARGS:+FINE_TUNE_ARGS=\"$FINE_TUNE_ARGS\" }${TRAIN_ARGS:+TRAIN_ARGS=\"$TRAIN_ARGS\" }bench/flickr8k_quality.sh" \
    --benchmarks docs/benchmarks.md
