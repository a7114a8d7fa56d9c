#!/usr/bin/env bash
# The whole imcap pipeline on Flickr8k from ../shared: prepare → extract → train → caption → evaluate → visualize.
#
#   scripts/flickr8k.sh quick   # a subset (1000 training images, 3 minutes of training): a few minutes in all
#   scripts/flickr8k.sh full    # all 8091 images, 60 minutes of training, test BLEU at the end
#
# Environment: PYTHON (default .venv/bin/python), IMCAP_SHARED (default ../shared), RUNS (default runs).
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${1:-quick}
PY=${PYTHON:-.venv/bin/python}
SHARED=${IMCAP_SHARED:-../shared}
RUNS=${RUNS:-runs}
ENCODER=${ENCODER:-efficientnet_lite0}
FEATURES=$RUNS/features-$ENCODER
case "$PROFILE" in
  quick) OUT=$RUNS/flickr8k-quick; PREP_ARGS="--max-images-per-split 1000"
         TRAIN_ARGS="--max-seconds 180 --checkpoint-interval 100 --batch-size 64 --decode-and-evaluate 200"
         EVAL_SPLIT_LIMIT=200 ;;
  full)  OUT=$RUNS/flickr8k-full; PREP_ARGS=""
         TRAIN_ARGS="--max-seconds 3600 --checkpoint-interval 500 --batch-size 128 --decode-and-evaluate 500"
         EVAL_SPLIT_LIMIT=0 ;;
  *) echo "usage: $0 quick|full" >&2; exit 2 ;;
esac
DATA=$OUT/data
mkdir -p "$OUT"
step() { echo; echo "== $*"; }

step "prepare: Flickr8k captions → $DATA"
$PY -m imcap.prepare_data --captions "$SHARED/data/flickr8k/captions.tsv" --output "$DATA" $PREP_ARGS
if [ "$EVAL_SPLIT_LIMIT" -gt 0 ]; then   # the quick profile validates and scores on a part of val and test
  for f in "$DATA"/{val,test}.images "$DATA"/{val,test}.captions.?; do head -n "$EVAL_SPLIT_LIMIT" "$f" > "$f.tmp"; mv "$f.tmp" "$f"; done
fi

step "extract: $ENCODER features → $FEATURES (cached images are skipped)"
$PY -m imcap.extract_features --image-encoder "$ENCODER" --image-root "$SHARED/data/flickr8k/images" \
    --input "$DATA"/train.images "$DATA"/val.images "$DATA"/test.images --output-root "$FEATURES" \
    --output "$DATA"/train.features "$DATA"/val.features "$DATA"/test.features --quiet

step "train → $OUT/model"
$PY -m imcap.train --source "$DATA"/train.features --target "$DATA"/train.captions \
    --validation-source "$DATA"/val.features --validation-target "$DATA"/val.captions.{0,1,2,3,4} \
    --source-root "$FEATURES" --output "$OUT"/model $TRAIN_ARGS --quiet

step "caption the test images → $OUT/test.hyp"
$PY -m imcap.captioner --models "$OUT"/model --source-root "$FEATURES" --beam-size 5 \
    --input "$DATA"/test.features --output "$OUT"/test.hyp

step "evaluate (sacrebleu, all references)"
$PY -m imcap.evaluate --hypotheses "$OUT"/test.hyp --references "$DATA"/test.captions.{0,1,2,3,4} | tee "$OUT"/test.scores

step "visualize → $OUT/test-captions.png, $OUT/training-curves.png"
$PY -m imcap.visualize captions --images "$DATA"/test.images --image-root "$SHARED/data/flickr8k/images" \
    --hypotheses "$OUT"/test.hyp --references "$DATA"/test.captions.{0,1,2,3,4} --num-images 8 \
    --output "$OUT"/test-captions.png --quiet
$PY -m imcap.visualize curves --model "$OUT"/model --output "$OUT"/training-curves.png --quiet

step "a few test captions (prediction | first reference)"
paste -d'|' <(head -n 5 "$DATA"/test.images) <(head -n 5 "$OUT"/test.hyp) <(head -n 5 "$DATA"/test.captions.0) \
  | sed 's/|/  |  /g'
