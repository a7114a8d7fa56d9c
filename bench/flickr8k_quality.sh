#!/usr/bin/env bash
# Quality benchmark: the full Flickr8k recipe (scripts/flickr8k.sh full: features from the cache, 60 minutes of
# training, checkpoint/beam/length-penalty chosen on val, the test split scored once), then one figure per line
# and a row appended to docs/benchmarks.md.
#
#   bench/flickr8k_quality.sh                              # ~75 minutes on 2 CPU cores; run it alone on the machine
#   TOKENIZER=sentencepiece VOCAB_SIZE=4000 bench/flickr8k_quality.sh   # English with another tokenizer
#   LANGUAGE=zh TOKENIZER=jieba bench/flickr8k_quality.sh  # Flickr8k-CN's Chinese captions (scripts/flickr8k-cn.sh)
#
# Environment: as scripts/flickr8k.sh (PYTHON, IMCAP_SHARED, RUNS, ENCODER, FEATURES, TRAIN_ARGS, MODELS,
# SELF_CRITICAL_SECONDS, SCST_ARGS, AUGMENTATIONS, SELECT_ARGS, SELECT_METRIC, FINE_TUNE_FROM, FINE_TUNE_ARGS,
# ENSEMBLE_XENT); TOKENIZER (words, none, sentencepiece with VOCAB_SIZE, jieba, chars) and LANGUAGE (en, zh) put the
# row into the table of tokenizers and languages, with the vocabulary's figures.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
RUNS=${RUNS:-runs}
LANGUAGE=${LANGUAGE:-en}
TOKENIZER=${TOKENIZER:-}
RECIPE=scripts/flickr8k.sh
CAPTIONS_NAME=""
if [ "$LANGUAGE" = zh ]; then
  TOKENIZER=${TOKENIZER:-jieba}; export TOKENIZER
  RECIPE=scripts/flickr8k-cn.sh NAME=cn-$TOKENIZER SCORE_TOKENIZE=jieba CAPTIONS_NAME=Flickr8k-CN
elif [ -n "$TOKENIZER" ]; then
  TOKENIZER_ARGS="--tokenizer $TOKENIZER${VOCAB_SIZE:+ --vocab-size $VOCAB_SIZE}"; export TOKENIZER_ARGS
  NAME=$TOKENIZER${VOCAB_SIZE:+$VOCAB_SIZE}; export NAME
  SCORE_TOKENIZE=none CAPTIONS_NAME=Flickr8k
fi
LANGUAGE_PREFIX=""   # of the command recorded
if [ "$LANGUAGE" != en ]; then LANGUAGE_PREFIX="LANGUAGE=$LANGUAGE "; fi
OUT=$RUNS/flickr8k-full${FINE_TUNE_FROM:+-ft-$FINE_TUNE_FROM}${NAME:+-$NAME}   # where scripts/flickr8k.sh writes
mkdir -p "$OUT"
start=$(date +%s)
$RECIPE full 2>&1 | tee "$OUT"/bench.log
total=$(( $(date +%s) - start ))
$PY bench/report_quality.py --run "$OUT" --log "$OUT"/bench.log --total-seconds "$total" --models "${MODELS:-1}" \
    --augmentations "${AUGMENTATIONS:-}" ${ENSEMBLE_XENT:+--ensemble-xent} --tokenize "${SCORE_TOKENIZE:-none}" \
    ${CAPTIONS_NAME:+--captions-name "$CAPTIONS_NAME"} \
    --command "$LANGUAGE_PREFIX${TOKENIZER:+TOKENIZER=$TOKENIZER }${VOCAB_SIZE:+VOCAB_SIZE=$VOCAB_SIZE }${MODELS:+MODELS=$MODELS }${ENSEMBLE_XENT:+ENSEMBLE_XENT=$ENSEMBLE_XENT }${SELF_CRITICAL_SECONDS:+SELF_CRITICAL_SECONDS=$SELF_CRITICAL_SECONDS }${SCST_ARGS:+SCST_ARGS=\"$SCST_ARGS\" }${ENCODER:+ENCODER=$ENCODER }${AUGMENTATIONS:+AUGMENTATIONS=$AUGMENTATIONS }${SELECT_ARGS:+SELECT_ARGS=\"$SELECT_ARGS\" }${SELECT_METRIC:+SELECT_METRIC=$SELECT_METRIC }${FINE_TUNE_FROM:+FINE_TUNE_FROM=$FINE_TUNE_FROM }${FINE_TUNE_ARGS:+FINE_TUNE_ARGS=\"$FINE_TUNE_ARGS\" }${TRAIN_ARGS:+TRAIN_ARGS=\"$TRAIN_ARGS\" }bench/flickr8k_quality.sh" \
    --benchmarks docs/benchmarks.md
