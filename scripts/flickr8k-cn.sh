#!/usr/bin/env bash
# The pipeline of scripts/flickr8k.sh on Flickr8k-CN: native speakers' Chinese captions of the same Flickr8k images
# and splits (Li et al. 2016, ../shared/data/flickr8k-cn), the features of the Flickr8k cache, scored on jieba's
# words (as the paper scored them).
#
#   scripts/flickr8k-cn.sh quick|full          # TOKENIZER=jieba (default), chars or sentencepiece
#
# TOKENIZER=sentencepiece also needs VOCAB_SIZE (default 3000). The outputs go to $RUNS/flickr8k-PROFILE-cn-TOKENIZER.
# Every other variable of scripts/flickr8k.sh applies.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${IMCAP_SHARED:-../shared}
TOKENIZER=${TOKENIZER:-jieba}
ARGS="--tokenizer $TOKENIZER"
if [ "$TOKENIZER" = sentencepiece ]; then ARGS="$ARGS --vocab-size ${VOCAB_SIZE:-3000} --language zh"; fi
CAPTIONS="$SHARED/data/flickr8k-cn/captions.tsv" TOKENIZER_ARGS="$ARGS" SCORE_TOKENIZE=jieba NAME="cn-$TOKENIZER" \
    exec scripts/flickr8k.sh "$@"
