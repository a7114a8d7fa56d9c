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
# the encoders whose weight files hold their ImageNet classifier
EFFICIENTNET_LITE = (ENCODER_EFFICIENTNET_LITE0, ENCODER_EFFICIENTNET_LITE2)
DECODER_RNN = "rnn"
DECODER_TRANSFORMER = "transformer"
DECODER_CNN = "cnn"
IMAGE_POSITIONAL_EMBEDDING_CHOICES = ["none", "fixed", "learned"]
RNN_CELL_LSTM = "lstm"
RNN_CELL_GRU = "gru"
RNN_CELL_RNN = "rnn"  # Elman's vanilla RNN, tanh
RNN_CELL_CHOICES = [RNN_CELL_LSTM, RNN_CELL_GRU, RNN_CELL_RNN]
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

# The runtimes of the captioner and the server: MXNet over model dirs, ONNX Runtime over exported dirs (imcap.export)
BACKEND_MXNET = "mxnet"
BACKEND_ONNXRUNTIME = "onnxruntime"
BACKEND_CHOICES = [BACKEND_MXNET, BACKEND_ONNXRUNTIME]
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

# KVStores (--kvstore): several devices of one process, or MXNet's parameter server (ps-lite) over processes and
# machines, started by imcap.launch (see docs/scaling.md).
KVSTORE_DIST_SYNC = "dist_sync"
KVSTORE_DIST_DEVICE_SYNC = "dist_device_sync"
KVSTORE_DIST_ASYNC = "dist_async"
DIST_KVSTORE_CHOICES = [KVSTORE_DIST_SYNC, KVSTORE_DIST_DEVICE_SYNC, KVSTORE_DIST_ASYNC]
KVSTORE_CHOICES = ["device", "local"] + DIST_KVSTORE_CHOICES
# The environment a ps-lite worker reads (DMLC_ROLE first); imcap.launch sets it for every process of a job.
DMLC_WORKER_VARIABLES = ("DMLC_ROLE", "DMLC_PS_ROOT_URI", "DMLC_PS_ROOT_PORT", "DMLC_NUM_SERVER", "DMLC_NUM_WORKER")
# The line a worker writes to STDERR once its kvstore knows its rank; imcap.launch labels its lines with that rank.
RANK_ANNOUNCEMENT = "imcap.distributed: worker rank %d of %d"
RANK_ANNOUNCEMENT_PATTERN = r"^imcap\.distributed: worker rank (\d+) of (\d+)$"
# Kvstore keys from this one on carry the trainer's agreement between workers (gluon uses 0 .. parameters - 1).
DIST_RESERVED_KEY = 1 << 20
DIST_BROADCAST_BYTES = 4096   # the longest JSON value rank 0 broadcasts (the training state is ~600 bytes)
# Worker r draws its random numbers (dropout, sampling) from seed + r * RANK_SEED_STRIDE; rank 0 from the seed.
RANK_SEED_STRIDE = 1000003

# Arguments that may differ between an interrupted run and its resumption.
ARGS_MAY_DIFFER_ON_RESUME = {"max_seconds", "max_updates", "max_num_epochs", "quiet", "overwrite_output",
                             "log_interval", "device_ids", "use_cpu", "kvstore", "decode_and_evaluate",
                             "max_num_checkpoint_not_improved", "load_all_features_to_memory"}

# Default locations of the shared data beside the checkout.
DEFAULT_SHARED = "../shared"

# Guided captioning (imcap.guide): the classes that guide a caption by default, chosen on Flickr8k val
# (bench/guided.py, docs/guided.md)
DEFAULT_GUIDE_TOP_K = 2
DEFAULT_GUIDE_MIN_PROBABILITY = 0.2
