#!/usr/bin/env bash
# The whole imcap pipeline on Flickr8k from ../shared:
#   prepare → extract → train → average checkpoints → choose decoding settings on val → caption test → evaluate
#   → visualize.
#
#   scripts/flickr8k.sh quick   # 1000 training images, 3 minutes of training, 200 val/test images: ~6 minutes
#   scripts/flickr8k.sh full    # all 8091 images, 60 minutes of training (the recipe of docs/benchmarks.md)
#
# Environment: PYTHON (default .venv/bin/python), IMCAP_SHARED (default ../shared), RUNS (default runs),
# ENCODER (default efficientnet_lite0), FEATURES (the feature cache; default $RUNS/features-$ENCODER),
# TRAIN_ARGS (extra options for imcap.train), MODELS (default 1; with N > 1, N models with seeds 13, 14, ... share
# the training budget, trained one after the other, and decode as an ensemble), SELF_CRITICAL_SECONDS (default 0;
# with S > 0, each model trains with cross-entropy into MODEL.xent, then its last S seconds of the budget with
# self-critical training from MODEL.xent/params.best into MODEL; SCST_ARGS adds options to that second phase),
# AUGMENTATIONS (e.g. hflip: also cache the features of the mirrored images, train on both views, and let the
# choice on val include test-time augmentation, each model decoding the original and the mirrored image),
# SELECT_ARGS (the settings scripts/select_decoding.py tries on val, instead of the profile's grid, e.g.
# "--beam-sizes 3 5 --alphas 0.5 1.0"; an ensemble with test-time augmentation is slow to decode), SELECT_METRIC
# (what that choice maximizes on val: bleu or cider; default cider with SELF_CRITICAL_SECONDS, else bleu),
# FINE_TUNE_FROM (e.g. blocks.14: cache the CNN's output at that block in $RUNS/features-$ENCODER-$FINE_TUNE_FROM
# and train the rest of the CNN with the decoder, imcap.train --image-encoder-fine-tune; the outputs go to
# $RUNS/flickr8k-PROFILE-ft-$FINE_TUNE_FROM; docs/finetuning.md), FINE_TUNE_ARGS (options of that fine-tuning,
# e.g. "--image-encoder-learning-rate 0.0001"), ENSEMBLE_XENT (with SELF_CRITICAL_SECONDS: 1 decodes each
# self-critical model in an ensemble with the cross-entropy model it started from, MODEL.xent averaged as MODEL is;
# no training beyond the budget), CAPTIONS (the captions file; default ../shared/data/flickr8k/captions.tsv; the
# images stay Flickr8k's), TOKENIZER_ARGS (prepare_data's tokenizer options, e.g. "--tokenizer jieba" or
# "--tokenizer sentencepiece --vocab-size 2000"), SCORE_TOKENIZE (how val and test captions are segmented for
# scoring: select_decoding.py's and evaluate's --tokenize, e.g. jieba for Chinese; default none), NAME (appended to the output folder: $RUNS/flickr8k-PROFILE-NAME). scripts/flickr8k-cn.sh sets
# them for Flickr8k-CN's Chinese captions.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${1:-quick}
PY=${PYTHON:-.venv/bin/python}
SHARED=${IMCAP_SHARED:-../shared}
RUNS=${RUNS:-runs}
ENCODER=${ENCODER:-efficientnet_lite0}
FINE_TUNE_FROM=${FINE_TUNE_FROM:-}
FEATURES=${FEATURES:-$RUNS/features-$ENCODER${FINE_TUNE_FROM:+-$FINE_TUNE_FROM}}
EXTRACT_LAYER=${FINE_TUNE_FROM:+--image-encoder-layer $FINE_TUNE_FROM}
case "$PROFILE" in
  quick) OUT=$RUNS/flickr8k-quick; PREP="--max-images-per-split 1000"; EVAL_LIMIT=200
         BUDGET=180; STARTUP=5; TRAIN="--checkpoint-interval 100 --batch-size 64 --decode-and-evaluate 200"
         SCST_TRAIN="--checkpoint-interval 20 --batch-size 50"
         SELECT="--beam-sizes 3 --alphas 1.0" ;;
  full)  OUT=$RUNS/flickr8k-full; PREP=""; EVAL_LIMIT=0
         BUDGET=3600; STARTUP=30; TRAIN="--checkpoint-interval 300 --batch-size 128 --decode-and-evaluate 500 --learning-rate-reduce-num-not-improved 2"
         SCST_TRAIN="--checkpoint-interval 150 --batch-size 100"
         SELECT="--beam-sizes 1 3 5 --alphas 0.0 0.5 1.0" ;;
  *) echo "usage: $0 quick|full" >&2; exit 2 ;;
esac
SELECT=${SELECT_ARGS:-$SELECT}
if [ -n "$FINE_TUNE_FROM" ]; then
  OUT=$OUT-ft-$FINE_TUNE_FROM; TRAIN="$TRAIN --image-encoder-fine-tune ${FINE_TUNE_ARGS:-}"
  # self-critical training keeps the CNN's learning rate at a tenth of the decoder's, as cross-entropy does
  # (1e-4 against 1e-3); SCST_ARGS can set another
  SCST_TRAIN="$SCST_TRAIN --image-encoder-learning-rate 0.000005"
fi
OUT=$OUT${NAME:+-$NAME}
CAPTIONS=${CAPTIONS:-$SHARED/data/flickr8k/captions.tsv}
SCORE_TOKENIZE=${SCORE_TOKENIZE:-none}
DATA=$OUT/data
MODELS=${MODELS:-1}
if [ "$MODELS" -eq 1 ]; then MODEL_DIRS=$OUT/model; else MODEL_DIRS=$(seq -f "$OUT/model.%g" 1 "$MODELS"); fi
MODEL=$(echo "$MODEL_DIRS" | head -n 1)
SCST=${SELF_CRITICAL_SECONDS:-0}
ENSEMBLE_XENT=${ENSEMBLE_XENT:-0}
if [ "$ENSEMBLE_XENT" != 0 ] && [ "$SCST" -eq 0 ]; then
  echo "$0: ENSEMBLE_XENT needs SELF_CRITICAL_SECONDS > 0 (there is no cross-entropy model to add)" >&2; exit 2
fi
mkdir -p "$OUT"
step() { echo; echo "== $(date +%H:%M:%S) $*"; }

step "prepare: $CAPTIONS → $DATA ${TOKENIZER_ARGS:-}"
$PY -m imcap.prepare_data --captions "$CAPTIONS" --splits train="$SHARED/data/flickr8k/train.txt" \
    val="$SHARED/data/flickr8k/val.txt" test="$SHARED/data/flickr8k/test.txt" --output "$DATA" $PREP \
    ${TOKENIZER_ARGS:-} --quiet
if [ "$EVAL_LIMIT" -gt 0 ]; then   # the quick profile validates and scores on a part of val and test
  for f in "$DATA"/{val,test}.images "$DATA"/{val,test}.captions.?; do
    head -n "$EVAL_LIMIT" "$f" > "$f.tmp" && mv "$f.tmp" "$f"
  done
fi

step "extract: $ENCODER features → $FEATURES (images already cached are skipped)"
$PY -m imcap.extract_features --image-encoder "$ENCODER" $EXTRACT_LAYER --image-root "$SHARED/data/flickr8k/images" \
    --input "$DATA"/{train,val,test}.images --output-root "$FEATURES" \
    --output "$DATA"/{train,val,test}.features 2>&1 | grep -E "images/s|cached|Error|error" || true
AUGMENTATIONS=${AUGMENTATIONS:-}
if [ -n "$AUGMENTATIONS" ]; then
  step "extract: $AUGMENTATIONS views of the images → $FEATURES"
  $PY -m imcap.extract_features --image-encoder "$ENCODER" $EXTRACT_LAYER --image-root "$SHARED/data/flickr8k/images" \
      --input "$DATA"/{train,val,test}.images --output-root "$FEATURES" --output "$DATA"/{train,val,test}.features \
      --augmentations $AUGMENTATIONS 2>&1 | grep -E "images/s|cached|Error|error" || true
  TRAIN="$TRAIN --source-augmentations $AUGMENTATIONS"; SCST_TRAIN="$SCST_TRAIN --source-augmentations $AUGMENTATIONS"
  SELECT="$SELECT --augmentations $AUGMENTATIONS"
fi

train() {  # train OUTPUT SECONDS SEED [options]
  local out=$1 seconds=$2 seed=$3; shift 3
  $PY -m imcap.train --source "$DATA"/train.features --target "$DATA"/train.captions \
      --validation-source "$DATA"/val.features --validation-target "$DATA"/val.captions.{0,1,2,3,4} \
      --source-root "$FEATURES" --output "$out" --max-seconds "$seconds" --seed "$seed" $TRAIN \
      ${TRAIN_ARGS:-} "$@" --quiet
  tail -n 3 "$out"/metrics | cut -f1-7
}
# BUDGET is the wall-clock of all training processes together: each gets its share less STARTUP seconds for
# loading the features and building the model, which its --max-seconds does not count
seed=13
DECODE_DIRS=""
for dir in $MODEL_DIRS; do
  if [ "$SCST" -gt 0 ]; then
    xent=$((BUDGET / MODELS - SCST - STARTUP)) self_critical=$((SCST - STARTUP))
    step "train with cross-entropy → $dir.xent for $xent s, seed $seed (progress: $dir.xent/log)"
    train "$dir.xent" $xent $seed
    step "self-critical training from $dir.xent/params.best → $dir for $self_critical s (progress: $dir/log)"
    train "$dir" $self_critical $seed --params "$dir.xent/params.best" --loss self-critical --optimized-metric cider \
        --initial-learning-rate 0.00005 $SCST_TRAIN ${SCST_ARGS:-}
  else
    seconds=$((BUDGET / MODELS - STARTUP))
    step "train → $dir for $seconds s, seed $seed (progress: $dir/log)"
    train "$dir" $seconds $seed
  fi
  step "average the 4 best checkpoints → $dir/params.avg"
  $PY -m imcap.average "$dir" -n 4 --quiet
  DECODE_DIRS="$DECODE_DIRS $dir"
  if [ "$ENSEMBLE_XENT" != 0 ]; then
    step "average the 4 best checkpoints of the cross-entropy phase → $dir.xent/params.avg (decoded with $dir)"
    $PY -m imcap.average "$dir.xent" -n 4 --quiet
    DECODE_DIRS="$DECODE_DIRS $dir.xent"
  fi
  seed=$((seed + 1))
done

# a model trained for CIDEr-D is also chosen on it (Rennie et al. 2017)
if [ "$SCST" -gt 0 ]; then METRIC=${SELECT_METRIC:-cider}; else METRIC=${SELECT_METRIC:-bleu}; fi
step "choose checkpoint, beam size and length penalty (and test-time augmentation) on the validation split by $METRIC"
$PY scripts/select_decoding.py --model $DECODE_DIRS --source "$DATA"/val.features --source-root "$FEATURES" \
    --references "$DATA"/val.captions.{0,1,2,3,4} --checkpoints params.best params.avg $SELECT --metric "$METRIC" \
    --tokenize "$SCORE_TOKENIZE" --output "$OUT"/decode.options
DECODE=$(cat "$OUT"/decode.options)

step "caption the test images once, with $DECODE → $OUT/test.hyp"
$PY -m imcap.captioner --models $DECODE_DIRS --source-root "$FEATURES" $DECODE \
    --input "$DATA"/test.features --output "$OUT"/test.hyp

step "evaluate on test (BLEU of sacrebleu and of coco-caption, 5 references; diversity)"
$PY -m imcap.evaluate --hypotheses "$OUT"/test.hyp --references "$DATA"/test.captions.{0,1,2,3,4} \
    --training-captions "$DATA"/train.captions --tokenize "$SCORE_TOKENIZE" | tee "$OUT"/test.scores

step "visualize → $OUT/test-captions.png, $OUT/training-curves.png"
$PY -m imcap.visualize captions --images "$DATA"/test.images --image-root "$SHARED/data/flickr8k/images" \
    --hypotheses "$OUT"/test.hyp --references "$DATA"/test.captions.{0,1,2,3,4} --num-images 8 \
    --output "$OUT"/test-captions.png --quiet
$PY -m imcap.visualize curves --model "$MODEL" --output "$OUT"/training-curves.png --quiet

step "a few test captions (image: prediction | first reference)"
paste -d'\t' <(head -n 5 "$DATA"/test.images) <(head -n 5 "$OUT"/test.hyp) <(head -n 5 "$DATA"/test.captions.0) \
  | awk -F'\t' '{printf "%s: %s | %s\n", $1, $2, $3}'
