"""Constants shared by all of imcap: model-dir file names, special tokens and CLI choices."""

# Special tokens of the target vocabulary (same spellings as Sockeye and GluonNLP).
PAD_SYMBOL = "<pad>"
UNK_SYMBOL = "<unk>"
BOS_SYMBOL = "<s>"
EOS_SYMBOL = "</s>"

# Files of a model directory (see docs/architecture.md).
CONFIG_NAME = "config.yaml"
ARGS_NAME = "args.yaml"  # the options of the imcap.train run that made the dir
VOCAB_TRG_NAME = "vocab.trg.json"
PARAMS_BEST_NAME = "params.best"
PARAMS_NAME = "params.%05d"
TRAINING_STATE_DIRNAME = "training_state"
TRAINER_STATES_NAME = "trainer.states"
TRAINING_STATE_NAME = "state.json"
METRICS_NAME = "metrics"
LOG_NAME = "log"
DECODE_OUT_NAME = "decode.output.%05d"

# Feature cache (see imcap.extract_features).
FEATURE_CACHE_MANIFEST = "cache.json"
FEATURE_SUFFIX = ".npy"
# Augmented views of an image whose features can be cached beside the original's (IMAGE.VIEW.npy) and drawn at
# random during training: "hflip" is the image mirrored left to right.
AUGMENTATION_HFLIP = "hflip"
AUGMENTATION_CHOICES = [AUGMENTATION_HFLIP]

# Choices offered on the command line.
ENCODER_EFFICIENTNET_LITE0 = "efficientnet_lite0"
ENCODER_EFFICIENTNET_LITE2 = "efficientnet_lite2"
DECODER_RNN = "rnn"
DECODER_TRANSFORMER = "transformer"
DECODER_CNN = "cnn"
IMAGE_POSITIONAL_EMBEDDING_CHOICES = ["none", "fixed", "learned"]
RNN_CELL_CHOICES = ["lstm", "gru"]
ATT_MLP = "mlp"
ATT_DOT = "dot"
ATT_BILINEAR = "bilinear"
ATT_COVERAGE = "coverage"
ATT_NONE = "none"  # Show and Tell: the pooled image as the first input, no attention
ATT_CHOICES = [ATT_MLP, ATT_DOT, ATT_BILINEAR, ATT_COVERAGE, ATT_NONE]
STATE_INIT_ZERO = "zero"
STATE_INIT_AVG = "avg"
STATE_INIT_LAST = "last"
STATE_INIT_CHOICES = [STATE_INIT_ZERO, STATE_INIT_AVG, STATE_INIT_LAST]
OUTPUT_TYPE_CAPTION = "caption"
OUTPUT_TYPE_CAPTION_WITH_SCORE = "caption_with_score"
OUTPUT_TYPE_JSON = "json"
OUTPUT_TYPES = [OUTPUT_TYPE_CAPTION, OUTPUT_TYPE_CAPTION_WITH_SCORE, OUTPUT_TYPE_JSON]
FEATURE_DTYPES = ["float16", "float32"]

# Metrics file columns and the optimized metric per name (lower or higher is better).
METRIC_PERPLEXITY = "perplexity"
METRIC_BLEU = "bleu"
METRIC_CIDER = "cider"
METRIC_CHOICES = [METRIC_PERPLEXITY, METRIC_BLEU, METRIC_CIDER]
METRIC_MAXIMIZE = {METRIC_PERPLEXITY: False, METRIC_BLEU: True, METRIC_CIDER: True}
METRIC_COLUMN = {METRIC_PERPLEXITY: "perplexity-val", METRIC_BLEU: "bleu-val", METRIC_CIDER: "cider-val"}

# Training objectives (--loss).
LOSS_CROSS_ENTROPY = "cross-entropy"
LOSS_SELF_CRITICAL = "self-critical"
LOSS_CHOICES = [LOSS_CROSS_ENTROPY, LOSS_SELF_CRITICAL]

# Arguments that may differ between an interrupted run and its resumption.
ARGS_MAY_DIFFER_ON_RESUME = {"max_seconds", "max_updates", "max_num_epochs", "quiet", "overwrite_output",
                             "log_interval", "device_ids", "use_cpu", "kvstore", "decode_and_evaluate",
                             "max_num_checkpoint_not_improved"}

# Default locations of the shared data beside the checkout.
DEFAULT_SHARED = "../shared"
