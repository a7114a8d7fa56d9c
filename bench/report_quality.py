#!/usr/bin/env python3
"""Read a finished full Flickr8k run (scripts/flickr8k.sh full) and report it: one figure per line on STDOUT and
a row appended to docs/benchmarks.md (with the command, the machine and the date)."""
import argparse
import datetime
import os
import re
import sys
from types import SimpleNamespace
from collections import Counter
from typing import Sequence, Tuple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from imcap.diversity import diversity_scores  # noqa: E402
from imcap.scoring import DEFAULT_METRICS, JAVA_METRICS, evaluate  # noqa: E402
from imcap.tokenizer import load_tokenizer, segment_for_scoring  # noqa: E402
from imcap.vocab import Vocabulary  # noqa: E402
from imcap.model import ModelConfig  # noqa: E402
from imcap.metrics_file import read_metrics  # noqa: E402
from imcap.utils import LOG_DATE_FORMAT, read_lines  # noqa: E402
from benchlib import append_row  # noqa: E402


LOG_TIME = re.compile(r"^\[([0-9:-]+) ")


def training_wall_seconds(log_path: str) -> float:
    """Wall-clock seconds of the ``imcap.train`` runs logged in ``log_path`` (a model dir's ``log``): from the
    first to the last timed line of each run (a run starts with the line that logs its command), summed over
    resumes. Unlike ``time-elapsed`` of the metrics, this counts loading the features and building the model
    (not the interpreter's start, a second or two before the first line).

    Raises ``ValueError`` if the log has no timed line."""
    runs: list = []
    with open(log_path, encoding="utf-8") as f:
        for line in f:
            match = LOG_TIME.match(line)
            if not match:
                continue
            stamp = datetime.datetime.strptime(match.group(1), LOG_DATE_FORMAT)
            if "] imcap.train " in line or not runs:
                runs.append([stamp, stamp])
            runs[-1][1] = stamp
    if not runs:
        raise ValueError("%s: no timed log line" % log_path)
    return sum((end - start).total_seconds() for start, end in runs)


def chosen_on_validation(log: str) -> Tuple[float, float]:
    """The val BLEU-4 and CIDEr-D of the decoding setting scripts/select_decoding.py chose, from the last line
    ``best on validation (by CIDEr-D): BLEU-4 20.06, CIDEr-D 0.512 with ...`` of a recipe's log (older logs:
    ``best on validation: BLEU-4 20.06 with ...``, without CIDEr-D); NaN for what the log does not have."""
    found = re.findall(r"best on validation[^:]*: BLEU-4 ([0-9.]+)(?:, CIDEr-D ([0-9.]+))?", log)
    if not found:
        return float("nan"), float("nan")
    bleu, cider = found[-1]
    return float(bleu), float(cider) if cider else float("nan")


def writable_share(references: Sequence[str], tokenizer, vocab: set) -> float:
    """The share (%) of the words of ``references`` (their scoring words, joined by spaces) that a model writes
    without ``<unk>``: those whose tokens by the model's ``tokenizer`` are all in ``vocab``."""
    words = Counter(w for line in references for w in line.split())
    writable = sum(count for word, count in words.items()
                   if all(t in vocab for t in tokenizer.tokenize(word) or [None]))
    return 100.0 * writable / max(1, sum(words.values()))


def summarize(run: str, log_path: str, models: int = 1, tokenize: str = "none") -> SimpleNamespace:
    """The figures of a finished run dir of the recipe: training time and speed summed over the members of an
    ensemble (``model.1`` .. ``model.N``, trained one after the other) and over both phases of self-critical
    training (``MODEL.xent``, then ``MODEL``), the val BLEU-4 of the chosen decoding setting, and the test scores
    of ``test.hyp`` (segmented by ``tokenize`` first, as ``imcap.evaluate --tokenize`` does: e.g. jieba's words for
    Chinese; then without the English-only METEOR and coco-caption BLEU); the vocabulary, the output layer's
    parameters and the share of the test references' words the model can write."""
    data = os.path.join(run, "data")
    log = open(log_path, encoding="utf-8").read()
    model_dirs = [os.path.join(run, "model")] if models == 1 else \
        [os.path.join(run, "model.%d" % i) for i in range(1, models + 1)]
    # with SELF_CRITICAL_SECONDS, each model's cross-entropy phase (MODEL.xent) counts too
    phases = [p for d in model_dirs for p in ([d + ".xent"] if os.path.isdir(d + ".xent") else []) + [d]]
    last = {d: read_metrics(os.path.join(d, "metrics"))[-1] for d in phases}
    lasts = list(last.values())
    seconds = sum(last["time-elapsed"] for last in lasts)
    samples = sum(last["time-elapsed"] * last["samples-per-second"] for last in lasts)
    val_bleu, val_cider = chosen_on_validation(log)
    captioning = re.findall(r"Captioned (\d+) lines \((\d+) failed\) in ([0-9.]+) s, ([0-9.]+) lines/s", log)
    segment = lambda lines: [segment_for_scoring(line, tokenize) for line in lines]  # noqa: E731
    hypotheses = segment(read_lines(os.path.join(run, "test.hyp")))
    references = [segment(read_lines(os.path.join(data, "test.captions.%d" % i))) for i in range(5)]
    metrics = DEFAULT_METRICS if tokenize == "none" else [m for m in DEFAULT_METRICS if m not in JAVA_METRICS]
    test = evaluate(hypotheses, references, metrics, skip_failing=["meteor"])
    wall = sum(training_wall_seconds(os.path.join(d, "log")) for d in phases)
    self_critical = [last[d]["time-elapsed"] for d in model_dirs if d + ".xent" in last]
    figures = {
        "models": len(model_dirs),
        "self-critical minutes": sum(self_critical) / 60.0,
        "training minutes": seconds / 60.0,
        "training wall-clock minutes (with loading)": wall / 60.0,
        "updates": sum(last["updates"] for last in lasts),
        "epochs": sum(last["epoch"] for last in lasts),
        "training samples/s": samples / seconds,
        "val BLEU-4 (chosen setting)": val_bleu,
        "val CIDEr-D (chosen setting)": val_cider,
        "captioning images/s (test, chosen setting)": float(captioning[-1][3]) if captioning else float("nan"),
    }
    figures.update({"test BLEU-%d" % n: test["bleu%d" % n] for n in range(1, 5)})
    figures.update({"test %s" % k: test[k] for k in ("METEOR", "ROUGE-L", "CIDEr-D") if k in test})
    diversity = diversity_scores(hypotheses, segment(read_lines(os.path.join(data, "train.captions"))))
    figures.update({"test %s" % k: v for k, v in diversity.items()})
    config = ModelConfig.load(os.path.join(model_dirs[0], "config.yaml"))
    vocab = set(Vocabulary.load(os.path.join(model_dirs[0], "vocab.trg.json")).token_to_idx)
    figures["vocabulary"] = len(vocab)
    figures["output layer parameters"] = config.vocab_size * (config.decoder.output_num_hidden + 1)
    figures["test reference words the model can write %"] = writable_share(
        [line for stream in references for line in stream], load_tokenizer(model_dirs[0]), vocab)
    return SimpleNamespace(figures=figures, test=test, diversity=diversity, model_dirs=model_dirs, config=config,
                           decode=open(os.path.join(run, "decode.options"), encoding="utf-8").read().strip())


def val_cell(figures: dict) -> str:
    """The val BLEU-4 of the chosen setting, with its CIDEr-D where the log has it: ``20.06 (CIDEr-D 0.512)``."""
    cider = figures.get("val CIDEr-D (chosen setting)", float("nan"))
    return "%.2f" % figures["val BLEU-4 (chosen setting)"] + ("" if cider != cider else " (CIDEr-D %.3f)" % cider)


def describe_configuration(config: ModelConfig, figures: dict, models: int = 1, augmentations: str = "",
                           ensemble_xent: bool = False) -> str:
    """The "configuration" cell of a quality row: the ensemble, the training phases, the features (and the
    fine-tuned part of the CNN) and the decoder's settings, from the first model's config and the run's figures."""
    made = config.feature_extraction or {}
    return "%s%s%sfeatures: %s %s (%d x %d)%s%s; decoder %s: %s" % (
        "ensemble of %d models trained one after the other; " % models if models > 1 else "",
        "cross-entropy, then %.1f min of self-critical training (CIDEr-D); " % figures["self-critical minutes"]
        if figures["self-critical minutes"] > 0 else "",
        "each self-critical model decoded with the cross-entropy model it started from, as one ensemble "
        "(no more training); "
        if ensemble_xent else "",
        made.get("encoder", "?"), "x".join(map(str, made.get("input_size", []))), config.encoder.num_regions,
        config.encoder.feature_dim,
        ", trained with the %s views too" % augmentations if augmentations else "",
        "; the CNN after %s (cached %d x %d) fine-tuned with the decoder" % (
            config.encoder_tail.layer, *config.encoder_tail.input_shape) if config.encoder_tail else "",
        config.decoder_name,
        "; ".join("%s: %s" % kv for kv in config.decoder.to_dict().items()))


def print_figures(figures: dict) -> None:
    for name, value in figures.items():
        print("%s: %s" % (name, "%.2f" % value if isinstance(value, float) else value))


def append_tokenizer_row(args: argparse.Namespace, run: SimpleNamespace) -> None:
    """The row of a run in the table of tokenizers and languages: the captions, the tokenizer, the vocabulary's
    figures, training speed and the test scores on the scoring segmentation."""
    figures, test = run.figures, run.test
    tokenizer = load_tokenizer(run.model_dirs[0]).to_dict()
    append_row(args.benchmarks, "Tokenizers and languages (bench/flickr8k_quality.sh)",
               ["captions", "tokenizer", "scored on", "vocabulary / output layer parameters",
                "test reference words writable %", "train min", "updates", "samples/s", "val BLEU-4",
                "test BLEU-1/2/3/4", "test ROUGE-L / CIDEr-D", "decoding (chosen on val)"], args.command,
               [args.captions_name, "%s (%s)" % (tokenizer.get("tokenizer"), tokenizer.get("language")),
                "words" if args.tokenize == "none" else args.tokenize,
                "%d / %d" % (figures["vocabulary"], figures["output layer parameters"]),
                "%.1f" % figures["test reference words the model can write %"],
                "%.1f (%.1f)" % (figures["training minutes"], figures["training wall-clock minutes (with loading)"]),
                str(figures["updates"]), "%.0f" % figures["training samples/s"], val_cell(figures),
                " / ".join("%.1f" % test["bleu%d" % n] for n in range(1, 5)),
                "%.1f / %.3f" % (test["ROUGE-L"], test["CIDEr-D"]), "`%s`" % run.decode])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--total-seconds", type=float, required=True)
    parser.add_argument("--command", required=True)
    parser.add_argument("--benchmarks", required=True)
    parser.add_argument("--models", type=int, default=1, help="Members of the ensemble (MODELS of the recipe).")
    parser.add_argument("--augmentations", default="", help="Augmented views trained on (AUGMENTATIONS of the recipe).")
    parser.add_argument("--ensemble-xent", action="store_true",
                        help="Each self-critical model decoded with its cross-entropy model (ENSEMBLE_XENT=1).")
    parser.add_argument("--tokenize", default="none", help="How the test captions are segmented for scoring "
                                                           "(SCORE_TOKENIZE of the recipe, e.g. jieba).")
    parser.add_argument("--captions-name", default=None,
                        help="The captions trained on (e.g. Flickr8k-CN): the row goes to the table of tokenizers "
                             "and languages, with the vocabulary's figures.")
    args = parser.parse_args()
    run = summarize(args.run, args.log, args.models, args.tokenize)
    figures, test, config = run.figures, run.test, run.config
    figures["pipeline minutes"] = args.total_seconds / 60.0
    print_figures(figures)
    if args.captions_name:
        append_tokenizer_row(args, run)
        return
    configuration = describe_configuration(config, figures, args.models, args.augmentations, args.ensemble_xent)
    append_row(args.benchmarks, "Flickr8k quality (bench/flickr8k_quality.sh)",
               ["configuration", "decoding (chosen on val)", "train min", "updates", "samples/s", "val BLEU-4",
                "test BLEU-1/2/3/4", "test METEOR / ROUGE-L / CIDEr-D",
                "test repeated-trigram % / distinct captions / distinct-1 / distinct-2 / novel %"], args.command,
               [configuration, "`%s`" % run.decode,
                "%.1f (%.1f)" % (figures["training minutes"], figures["training wall-clock minutes (with loading)"]),
                str(figures["updates"]),
                "%.0f" % figures["training samples/s"], val_cell(figures),
                " / ".join("%.1f" % test["bleu%d" % n] for n in range(1, 5)),
                "%s / %s / %s" % tuple("%.3f" % test[k] if k == "CIDEr-D" else "%.1f" % test[k] if k in test else "n/a"
                                       for k in ("METEOR", "ROUGE-L", "CIDEr-D")),
                "%.1f / %d / %.3f / %.3f / %.1f" % tuple(run.diversity[k] for k in (
                    "repeated-trigram-%", "distinct-captions", "distinct-1", "distinct-2", "novel-%"))])


if __name__ == "__main__":
    main()
