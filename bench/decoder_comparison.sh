#!/usr/bin/env bash
# Decoder comparison: one decoder through the full Flickr8k recipe (scripts/flickr8k.sh full: cached
# EfficientNet-Lite0 features, the same 60-minute training budget, checkpoint/beam/length penalty chosen on val,
# the test split scored once), then its figures (test BLEU-4 and CIDEr-D, training samples/s, captioning images/s
# at beam 5, parameters) one per line and a row in the "Decoder comparison" table of docs/benchmarks.md.
#
#   bench/decoder_comparison.sh rnn|show-and-tell|transformer|cnn     # ~70 minutes each; run it alone
#   bench/decoder_comparison.sh vanilla-rnn|lstm|attention-lstm       # seed 001's three recurrent rows
#   bench/decoder_comparison.sh NAME --args                           # print the decoder's training options
#
# Environment: PYTHON, IMCAP_SHARED, FEATURES (default runs/features-efficientnet_lite0, shared by the runs);
# TRAIN_ARGS is added after the decoder's options (e.g. "--max-seconds 120" for a short trial); SELECT_ARGS as in
# scripts/flickr8k.sh. Each decoder's run lives in COMPARE_ROOT/compare-NAME/flickr8k-full (COMPARE_ROOT: default
# runs); running the script again on a finished run only re-reports it. The row goes to BENCHMARKS (default
# docs/benchmarks.md). For the decoders with attention (rnn, attention-lstm), the per-word attention maps of the
# first ATTENTION_IMAGES (default 4) test images are drawn into the run's attention/ folder.
set -euo pipefail
cd "$(dirname "$0")/.."
NAME=${1:-}
case "$NAME" in
  # the recipe's defaults: 1-layer LSTM 512, MLP attention (Xu et al. 2015)
  rnn)           ARGS="" ;;
  # Vinyals et al. 2015: the pooled image as the first input, no attention
  show-and-tell) ARGS="--rnn-attention-type none --rnn-decoder-state-init zero" ;;
  # seed 001: a vanilla (tanh) RNN and an LSTM, both without attention (Show and Tell), and the attention LSTM
  vanilla-rnn)   ARGS="--rnn-cell-type rnn --rnn-attention-type none --rnn-decoder-state-init zero" ;;
  lstm)          ARGS="--rnn-cell-type lstm --rnn-attention-type none --rnn-decoder-state-init zero" ;;
  attention-lstm) ARGS="--rnn-cell-type lstm --rnn-attention-type mlp" ;;
  transformer)   ARGS="--decoder transformer --num-layers 3 --transformer-model-size 256 --num-embed 256
                       --transformer-attention-heads 8 --transformer-feed-forward-num-hidden 1024
                       --transformer-dropout-prepost 0.2 --image-positional-embedding-type fixed
                       --learning-rate-warmup 400" ;;
  cnn)           ARGS="--decoder cnn --num-layers 3 --cnn-num-hidden 512 --cnn-kernel-width 3
                       --image-positional-embedding-type fixed" ;;
  *) echo "usage: $0 rnn|show-and-tell|transformer|cnn|vanilla-rnn|lstm|attention-lstm" >&2; exit 2 ;;
esac
ARGS=$(echo $ARGS)   # one line
if [ "${2:-}" = --args ]; then echo "$ARGS"; exit 0; fi   # the decoder's training options alone (bench/onnx_equality.py)
PY=${PYTHON:-.venv/bin/python}
export RUNS=${COMPARE_ROOT:-runs}/compare-$NAME FEATURES=${FEATURES:-runs/features-efficientnet_lite0}
export TRAIN_ARGS="$ARGS${TRAIN_ARGS:+ $TRAIN_ARGS}"
OUT=$RUNS/flickr8k-full
mkdir -p "$OUT"
scripts/flickr8k.sh full 2>&1 | tee "$OUT"/bench.log
$PY bench/report_decoder.py --name "$NAME" --run "$OUT" --log "$OUT"/bench.log --features "$FEATURES" \
    --command "bench/decoder_comparison.sh $NAME" --train-args "$TRAIN_ARGS" --benchmarks "${BENCHMARKS:-docs/benchmarks.md}"
case "$NAME" in
  rnn|attention-lstm)
    head -n "${ATTENTION_IMAGES:-4}" "$OUT"/data/test.features > "$OUT"/attention.features
    $PY -m imcap.captioner --models "$OUT"/model --source-root "$FEATURES" $(cat "$OUT"/decode.options) \
        --output-type json --input "$OUT"/attention.features --output "$OUT"/attention.json
    $PY -m imcap.visualize attention --json "$OUT"/attention.json --image-root "${IMCAP_SHARED:-../shared}/data/flickr8k/images" \
        --all-lines --output "$OUT"/attention --quiet
    echo "attention maps of ${ATTENTION_IMAGES:-4} test images: $OUT/attention/" ;;
esac
