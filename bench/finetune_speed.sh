#!/usr/bin/env bash
# Partial fine-tuning speed (docs/finetuning.md): training samples/s of the reference model (LSTM 512, MLP attention
# 512, --num-embed 512, batch 64) on frozen EfficientNet-Lite0 head features, and with the CNN's last block(s) and
# head fine-tuned from a cache at blocks.14 / blocks.13 (--image-encoder-fine-tune), and with that tail frozen
# (--image-encoder-learning-rate 0: forward only). Each run: 120 updates on the first 10000 training captions (2000
# images, features loaded into memory), a log line every 20 updates; the figure is the mean samples/s of the
# lines at 40..120 (100 updates after 20 of warm-up). Also extracts the blocks.14 cache of every Flickr8k image into
# runs/features-efficientnet_lite0-blocks.14 (what FINE_TUNE_FROM=blocks.14 scripts/flickr8k.sh full uses; images
# already cached are skipped). Needs runs/flickr8k-full/data (scripts/flickr8k.sh full) and
# runs/features-efficientnet_lite0. Run alone: flock /tmp/imcap-cpu.lock bench/finetune_speed.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
D=runs/flickr8k-full/data B=runs/finetune-bench/data IMG=${IMCAP_SHARED:-../shared}/data/flickr8k/images
F14=runs/features-efficientnet_lite0-blocks.14 F13=runs/features-efficientnet_lite0-blocks.13-bench
mkdir -p $B
head -n 10000 $D/train.features > $B/train.features; head -n 10000 $D/train.captions > $B/train.captions
head -n 10000 $D/train.images > $B/train.images; head -n 200 $D/val.features > $B/val.features
head -n 200 $D/val.images > $B/val.images
for k in 0 1 2 3 4; do head -n 200 $D/val.captions.$k > $B/val.captions.$k; done
echo "== $(date +%T) extract blocks.14, all 8091 images"
/usr/bin/time -f "%e s wall" $PY -m imcap.extract_features --image-encoder-layer blocks.14 --image-root $IMG \
  --input $D/{train,val,test}.images --output-root $F14 --output $F14/{train,val,test}.features --quiet
du -sh $F14
echo "== $(date +%T) extract blocks.13, the bench subset"
$PY -m imcap.extract_features --image-encoder-layer blocks.13 --image-root $IMG \
  --input $B/{train,val}.images --output-root $F13 --output $F13/{train,val}.features --quiet
MODEL="--rnn-num-hidden 512 --rnn-attention-num-hidden 512 --num-embed 512 --batch-size 64"
run() {  # NAME ROOT [options]
  local name=$1 root=$2; shift 2
  echo "== $(date +%T) train $name"
  rm -rf /tmp/finetune-bench-$name
  $PY -m imcap.train --source $B/train.features --target $B/train.captions --validation-source $B/val.features \
    --validation-target $B/val.captions.{0,1,2,3,4} --source-root $root --output /tmp/finetune-bench-$name \
    $MODEL --max-updates 120 --checkpoint-interval 120 --log-interval 20 --load-all-features-to-memory --quiet "$@"
  grep -E "samples/s|parameters|CNN tail" /tmp/finetune-bench-$name/log | cut -c1-200
}
run frozen-head runs/features-efficientnet_lite0
run ft-blocks.14 $F14 --image-encoder-fine-tune
run ft-blocks.13 $F13 --image-encoder-fine-tune
run tail0-blocks.14 $F14 --image-encoder-fine-tune --image-encoder-learning-rate 0
echo "== $(date +%T) done"
for name in frozen-head ft-blocks.14 ft-blocks.13 tail0-blocks.14; do
  grep -o "updates [0-9]*, epoch [0-9]*: [0-9.]* samples/s" /tmp/finetune-bench-$name/log | awk -v n=$name \
    '{split($0, a, ": "); split(a[2], b, " "); u=$2+0; if (u >= 40) {s += b[1]; c++}} END {printf "%s: %.1f samples/s (updates 21-120)\n", n, s / c}'
done
