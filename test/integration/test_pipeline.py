"""The whole chain on real data, through the CLIs as subprocesses: prepare_data → extract_features → train →
captioner → evaluate / visualize, on a small Flickr8k subset (20 train, 8 val, 8 test images) and a tiny model.

The subset and its features are built once per session (``small_data`` in conftest.py); the model is trained
once for this module."""
import json
import os
import re
import shutil
import subprocess
import time
from types import SimpleNamespace
from typing import Dict, List, Tuple

import numpy as np
import pytest
from PIL import Image

from imcap.plots.captions import PANEL_WIDTH
from imcap.plots.curves import CURVE_PANEL_SIZE
from imcap.plots.figure import DPI, FIGURE_MARGIN
from imcap.features import CLASSES_SUFFIX, classes_path
from imcap.scoring import metric_label
from imcap.utils import stop_process
from test.common import IMAGES, requires_shared
from test.figures import check_captions_grid, drawn_curves, read_png
from test.integration.conftest import NUM_REFERENCES, REPO, SUBSET_SIZES, cli_command, cli_env, read_lines, run_cli

pytestmark = requires_shared

REGIONS, CHANNELS = 49, 1280
SUMMARY = re.compile(r"^Captioned (\d+) lines \((\d+) failed\)")
WARNING = re.compile(r"^Warning: line (\d+): (.*)$")


def output_lines(proc) -> List[str]:
    """STDOUT of a finished process as lines; every line, the last included, must end with a newline."""
    text = proc.stdout.decode("utf-8")
    assert text == "" or text.endswith("\n"), "output does not end with a newline: %r" % text[-80:]
    return text.split("\n")[:-1]


def stderr_lines(proc) -> List[str]:
    return proc.stderr.decode("utf-8", "replace").splitlines()


def summary(proc) -> Tuple[int, int]:
    """``(lines, failed)`` from the captioner's final STDERR line."""
    last = stderr_lines(proc)[-1]
    match = SUMMARY.match(last)
    assert match, "last STDERR line is not the summary: %r" % last
    return int(match.group(1)), int(match.group(2))


def warnings_by_line(proc) -> Dict[int, List[str]]:
    found = {}  # type: Dict[int, List[str]]
    for line in stderr_lines(proc):
        match = WARNING.match(line)
        if match:
            found.setdefault(int(match.group(1)), []).append(match.group(2))
    return found


def parse_metrics(path: str) -> List[Tuple[int, Dict[str, str]]]:
    """``N\\tkey=value\\t...`` lines as ``(N, {key: value})``."""
    entries = []
    for line in read_lines(path):
        fields = line.split("\t")
        values = dict(field.split("=", 1) for field in fields[1:])
        entries.append((int(fields[0]), values))
    return entries


# --- 1. prepare_data --------------------------------------------------------------------------------------------

def test_prepare_data_writes_the_subset(small_data):
    data = small_data.data
    assert len(read_lines(os.path.join(data, "train.images"))) == 5 * SUBSET_SIZES["train"] == 100
    captions = read_lines(os.path.join(data, "train.captions"))
    assert len(captions) == 100
    assert all(c and c == c.lower() and "." not in c and "  " not in c for c in captions)
    # an image with five captions is on five consecutive lines, in the order of the split file
    train_images = read_lines(os.path.join(data, "train.images"))
    assert train_images[::5] == small_data.raw.images["train"]
    for split in ("val", "test"):
        images = read_lines(os.path.join(data, split + ".images"))
        assert images == small_data.raw.images[split] and len(images) == 8
        for k in range(NUM_REFERENCES):
            references = read_lines(os.path.join(data, "%s.captions.%d" % (split, k)))
            assert len(references) == 8 and all(references)
        assert not os.path.exists(os.path.join(data, "%s.captions.%d" % (split, NUM_REFERENCES)))
        assert len(read_lines(os.path.join(data, split + ".all.captions"))) == 40


# --- 2. extract_features ----------------------------------------------------------------------------------------

def cache_files(cache: str) -> Dict[str, int]:
    """Every file of the cache → its mtime in ns."""
    found = {}
    for folder, _, names in os.walk(cache):
        for name in names:
            path = os.path.join(folder, name)
            found[os.path.relpath(path, cache)] = os.stat(path).st_mtime_ns
    return found


def test_extracted_features(small_data):
    data, cache = small_data.data, small_data.cache
    for split in SUBSET_SIZES:
        images = read_lines(os.path.join(data, split + ".images"))
        features = read_lines(os.path.join(data, split + ".features"))
        assert features == [image + ".npy" for image in images]
        for path in set(features):
            array = np.load(os.path.join(cache, path))
            assert array.shape == (REGIONS, CHANNELS) and array.dtype == np.float16
            assert np.isfinite(array).all() and array.astype(np.float32).std() > 0
    with open(os.path.join(cache, "cache.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    assert manifest["encoder"] == "efficientnet_lite0"
    assert manifest["layer"] == "head"
    assert manifest["input_size"] == [224, 224]
    assert manifest["feature_shape"] == [REGIONS, CHANNELS]
    assert manifest["dtype"] == "float16"
    # each image computed once although the training list names it five times, its class probabilities beside
    files = cache_files(cache)
    features = [f for f in files if f.endswith(".npy") and not f.endswith(CLASSES_SUFFIX)]
    assert len(features) == sum(SUBSET_SIZES.values())
    assert sorted(f for f in files if f.endswith(CLASSES_SUFFIX)) == sorted(classes_path(f) for f in features)
    assert not [f for f in cache_files(cache) if f.endswith(".tmp")]


def test_extraction_again_computes_nothing(small_data):
    before = cache_files(small_data.cache)
    lists_before = {s: read_lines(os.path.join(small_data.data, s + ".features")) for s in SUBSET_SIZES}
    proc = run_cli("extract_features", *small_data.extract_args)  # not --quiet: its log says what it did
    log = proc.stderr.decode("utf-8", "replace")
    assert "36 images, 36 already cached, 0 to compute" in log
    assert "computed" not in log
    assert cache_files(small_data.cache) == before  # no feature file rewritten, none added
    assert {s: read_lines(os.path.join(small_data.data, s + ".features")) for s in SUBSET_SIZES} == lists_before
    assert proc.seconds < max(60.0, 2 * small_data.extract_seconds)


def test_extraction_refuses_to_mix_layers_in_one_cache(small_data, tmp_path):
    before = cache_files(small_data.cache)
    output = str(tmp_path / "train.features")
    proc = run_cli("extract_features", "--input", os.path.join(small_data.data, "train.images"), "--image-root",
                   IMAGES, "--output-root", small_data.cache, "--output", output, "--batch-size", "8",
                   "--image-encoder-layer", "blocks.14", "--quiet", expect=1)
    error = proc.stderr.decode("utf-8", "replace")
    assert "cache.json" in error and "layer" in error and "Traceback" not in error
    assert error.startswith("Error: ")
    assert cache_files(small_data.cache) == before
    assert not os.path.exists(output)


# --- 3. train ---------------------------------------------------------------------------------------------------

# ``model`` (conftest.py): a tiny model trained for 150 updates, checkpoints every 50.


def test_train_writes_a_model_dir(model):
    for name in ("config.yaml", "vocab.trg.json", "params.best", "params.00001", "params.00002", "params.00003",
                 "metrics", "log", os.path.join("training_state", "state.json")):
        assert os.path.isfile(os.path.join(model.dir, name)), name
    assert not os.path.exists(os.path.join(model.dir, "params.00004"))
    metrics = parse_metrics(os.path.join(model.dir, "metrics"))
    assert [n for n, _ in metrics] == [1, 2, 3]
    assert [int(values["updates"]) for _, values in metrics] == [50, 100, 150]
    for _, values in metrics:
        for key in ("perplexity-train", "perplexity-val", "bleu-val", "time-elapsed", "samples-per-second"):
            assert key in values
            float(values[key])
        assert float(values["perplexity-val"]) > 1.0
        assert 0.0 <= float(values["bleu-val"]) <= 100.0
    with open(os.path.join(model.dir, "training_state", "state.json"), encoding="utf-8") as f:
        state = json.load(f)
    assert state["updates"] == 150 and state["checkpoint"] == 3
    import yaml
    with open(os.path.join(model.dir, "config.yaml"), encoding="utf-8") as f:
        config = yaml.safe_load(f)
    assert (config["encoder"]["num_regions"], config["encoder"]["feature_dim"]) == (REGIONS, CHANNELS)
    # the features' origin (cache.json under --source-root) is recorded for captioning raw images
    assert config["feature_extraction"]["encoder"] == "efficientnet_lite0"
    assert config["feature_extraction"]["layer"] == "head"
    with open(os.path.join(model.dir, "vocab.trg.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    assert vocab["idx_to_token"][:4] == ["<pad>", "<unk>", "<s>", "</s>"]
    with open(os.path.join(model.dir, "log"), encoding="utf-8") as f:
        assert "checkpoint 3" in f.read()
    assert not [n for _, _, names in os.walk(model.dir) for n in names if n.endswith(".tmp")]


def test_train_again_has_nothing_to_do(model):
    metrics_path = os.path.join(model.dir, "metrics")
    with open(metrics_path, "rb") as f:
        metrics = f.read()
    mtime = os.stat(metrics_path).st_mtime_ns
    run_cli("train", *model.args)
    with open(metrics_path, "rb") as f:
        assert f.read() == metrics
    assert os.stat(metrics_path).st_mtime_ns == mtime
    assert not os.path.exists(os.path.join(model.dir, "params.00004"))
    with open(os.path.join(model.dir, "log"), encoding="utf-8") as f:
        assert "nothing to do" in f.read().splitlines()[-1]


# --- 4. captioner -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def test_features(small_data) -> bytes:
    with open(os.path.join(small_data.data, "test.features"), "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def test_captions(model, small_data, test_features, tmp_path_factory) -> SimpleNamespace:
    """Default captioner output for the test images (cached features), also written to ``path``."""
    proc = run_cli("captioner", "--models", model.dir, "--source-root", small_data.cache, input=test_features)
    path = str(tmp_path_factory.mktemp("captions") / "test.hyp")
    with open(path, "wb") as f:
        f.write(proc.stdout)
    return SimpleNamespace(proc=proc, lines=output_lines(proc), path=path)


@pytest.fixture(scope="module")
def json_captions(model, small_data, test_features) -> List[dict]:
    proc = run_cli("captioner", "--models", model.dir, "--source-root", small_data.cache, "--output-type", "json",
                   "--nbest-size", "2", "--beam-size", "3", input=test_features)
    assert summary(proc) == (8, 0)
    return [json.loads(line) for line in output_lines(proc)]


def test_captioner_one_line_per_input(test_captions):
    assert len(test_captions.lines) == 8
    assert all(line.strip() for line in test_captions.lines)
    assert summary(test_captions.proc) == (8, 0)
    assert warnings_by_line(test_captions.proc) == {}


def test_the_model_fixture_says_more_than_a_few_words(test_captions):
    """Tests that compare two decoding paths on the ``model`` fixture need captions with content, not "a the the"."""
    words = {word for line in test_captions.lines for word in line.split()}
    assert len(words) >= 4, test_captions.lines


def test_captioner_json_output(json_captions, small_data):
    assert len(json_captions) == 8
    inputs = read_lines(os.path.join(small_data.data, "test.features"))
    for number, (obj, source) in enumerate(zip(json_captions, inputs), 1):
        assert obj["line"] == number and obj["image"] == source  # in input order
        assert "error" not in obj
        assert obj["caption"] == " ".join(obj["tokens"]) and obj["tokens"]
        assert isinstance(obj["score"], float) and obj["score"] < 0
        attention = np.array(obj["attention"])
        assert attention.shape == (len(obj["tokens"]) + 1, REGIONS)
        assert np.allclose(attention.sum(axis=1), 1.0, atol=1e-3)  # rounded to 5 decimals per weight
        assert (attention >= 0).all()
        assert len(obj["nbest"]) == 2
        assert obj["nbest"][0]["caption"] == obj["caption"]
        assert obj["nbest"][0]["score"] == pytest.approx(obj["score"])
        assert obj["nbest"][0]["score"] >= obj["nbest"][1]["score"]
        assert obj["nbest"][0]["caption"] != obj["nbest"][1]["caption"]


def test_captioner_caption_with_score(model, small_data, test_features, json_captions):
    proc = run_cli("captioner", "--models", model.dir, "--source-root", small_data.cache, "--output-type",
                   "caption_with_score", "--beam-size", "3", input=test_features)
    lines = output_lines(proc)
    assert len(lines) == 8
    for line, obj in zip(lines, json_captions):
        score, caption = line.split("\t")
        assert caption == obj["caption"]
        assert float(score) == pytest.approx(obj["score"], abs=1e-5)


def test_captioner_ensemble(model, small_data, test_features, json_captions):
    # an ensemble of a model with itself averages equal log-probabilities: the same captions
    proc = run_cli("captioner", "--models", model.dir, model.dir, "--source-root", small_data.cache,
                   "--beam-size", "3", input=test_features)
    assert output_lines(proc) == [obj["caption"] for obj in json_captions]
    assert summary(proc) == (8, 0)


def test_captioner_extract_image_features(model, small_data):
    paths = [os.path.join(IMAGES, image) for image in read_lines(os.path.join(small_data.data, "test.images"))]
    proc = run_cli("captioner", "--models", model.dir, "--extract-image-features", "--quiet",
                   input="".join(p + "\n" for p in paths))
    lines = output_lines(proc)
    # float16 storage of the cached features changes the scores slightly: no comparison with them
    assert len(lines) == 8 and all(line.strip() for line in lines)
    assert summary(proc) == (8, 0)


def test_captioner_json_input(model, small_data):
    feature = read_lines(os.path.join(small_data.data, "test.features"))[0]
    lines = [json.dumps({"image": feature}),
             json.dumps({"image": feature, "constraints": ["a dog"]}),
             json.dumps({"image": os.path.join(small_data.cache, feature)})]  # absolute paths ignore the root
    proc = run_cli("captioner", "--models", model.dir, "--source-root", small_data.cache, "--json-input",
                   input="".join(line + "\n" for line in lines))
    out = output_lines(proc)
    assert len(out) == 3
    assert out[0].strip() and out[2] == out[0]
    assert " a dog " in " %s " % out[1]   # lexical constraints (test_constraints.py tests them)
    assert warnings_by_line(proc) == {}
    assert summary(proc) == (3, 0)


# --- 5. bad input -----------------------------------------------------------------------------------------------

def write_input_files(directory: str) -> Tuple[bytes, List[int], List[int]]:
    """Images in many modes and broken files, and an input (bytes) naming them, with bad lines mixed in.

    :return: the input, the line numbers that must be captioned, the line numbers that must fail.
    """
    source = os.path.join(IMAGES, sorted(os.listdir(IMAGES))[0])
    with Image.open(source) as img:
        rgb = img.convert("RGB")
    path = lambda name: os.path.join(directory, name)  # noqa: E731
    rgb.convert("L").save(path("gray.png"))
    rgb.convert("CMYK").save(path("cmyk.jpg"))
    rgb.convert("P").save(path("palette.png"))
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgb.size))
    rgba.save(path("rgba.png"))
    Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257).save(path("16bit.png"))
    open(path("empty.jpg"), "wb").close()
    with open(source, "rb") as f:
        jpeg = f.read()
    with open(path("truncated.jpg"), "wb") as f:
        f.write(jpeg[:len(jpeg) // 2])
    with open(path("text.jpg"), "w", encoding="utf-8") as f:
        f.write("this is not an image\n")
    modes = {name: Image.open(path(name)).mode for name in ("gray.png", "cmyk.jpg", "palette.png", "rgba.png",
                                                           "16bit.png")}
    assert modes == {"gray.png": "L", "cmyk.jpg": "CMYK", "palette.png": "P", "rgba.png": "RGBA",
                     "16bit.png": "I;16"}
    lines = [  # (raw line with its line end, readable)
        (path("gray.png").encode() + b"\n", True),
        (path("missing.jpg").encode() + b"\n", False),
        (path("cmyk.jpg").encode() + b"\n", True),
        (path("empty.jpg").encode() + b"\n", False),
        (path("palette.png").encode() + b"\n", True),
        (path("truncated.jpg").encode() + b"\n", False),
        (path("rgba.png").encode() + b"\n", True),
        (path("text.jpg").encode() + b"\n", False),
        (path("16bit.png").encode() + b"\n", True),
        (b"\n", False),
        (source.encode() + b"\r\n", True),
        (b"\xff\xfe.jpg\n", False),
        (source.encode() + b"\n", True),
    ]
    data = b"".join(raw for raw, _ in lines)
    good = [n for n, (_, ok) in enumerate(lines, 1) if ok]
    bad = [n for n, (_, ok) in enumerate(lines, 1) if not ok]
    return data, good, bad


def test_bad_input_never_costs_a_line(model, tmp_path):
    data, good, bad = write_input_files(str(tmp_path))
    proc = run_cli("captioner", "--models", model.dir, "--extract-image-features", "--quiet", "--batch-size", "4",
                   input=data)
    lines = output_lines(proc)
    assert len(lines) == data.count(b"\n") == 13
    for number in good:
        assert lines[number - 1].strip(), "line %d (readable) has no caption" % number
    for number in bad:
        assert lines[number - 1] == "", "line %d (unreadable) has a caption" % number
    assert lines[10] == lines[12]  # the same image with CRLF and LF line ends
    warnings = warnings_by_line(proc)
    assert sorted(warnings) == bad and all(len(w) == 1 for w in warnings.values())
    assert "no such file" in warnings[2][0] and "missing.jpg" in warnings[2][0]
    assert "empty" in warnings[4][0]
    assert "empty line" in warnings[10][0]
    assert "UTF-8" in warnings[12][0]
    assert summary(proc) == (13, len(bad))
    assert "Traceback" not in proc.stderr.decode("utf-8", "replace")


def test_a_closed_stdout_ends_the_captioner_without_a_traceback(model, small_data):
    """``captioner < features | head -n 0``: the reader has gone before the first caption is written."""
    features = "".join(line + "\n" for line in read_lines(os.path.join(small_data.data, "test.features")))
    read_end, write_end = os.pipe()
    os.close(read_end)   # no reader: the captioner's first write meets a closed pipe
    try:
        proc = subprocess.Popen(cli_command("captioner", ["--models", model.dir, "--source-root", small_data.cache]),
                                cwd=REPO, env=cli_env(), stdin=subprocess.PIPE, stdout=write_end,
                                stderr=subprocess.PIPE)
    finally:
        os.close(write_end)
    try:
        _, stderr = proc.communicate(features.encode("utf-8"), timeout=300)
    finally:
        if proc.poll() is None:   # timed out: stop it by its process id
            stop_process(proc)
    assert proc.returncode == 1 and "Traceback" not in stderr.decode("utf-8", "replace"), stderr[-3000:]


def test_huge_image_gets_a_caption(model, tmp_path):
    path = str(tmp_path / "huge.jpg")
    start = time.time()
    try:
        Image.new("RGB", (10000, 10000), (40, 110, 60)).save(path, quality=80)
        if time.time() - start > 10:
            pytest.skip("writing a 10000x10000 JPEG took %.0f s" % (time.time() - start))
        try:
            proc = run_cli("captioner", "--models", model.dir, "--extract-image-features", "--quiet",
                           input=path + "\n", timeout=60)
        except subprocess.TimeoutExpired:
            pytest.skip("captioning a 10000x10000 image took more than 60 s here")
    finally:
        if os.path.exists(path):
            os.remove(path)
    lines = output_lines(proc)
    assert len(lines) == 1 and lines[0].strip()
    assert summary(proc) == (1, 0)


# --- 6. evaluate and visualize ----------------------------------------------------------------------------------

def references(small_data, split: str = "test") -> List[str]:
    return [os.path.join(small_data.data, "%s.captions.%d" % (split, k)) for k in range(NUM_REFERENCES)]


def test_evaluate(test_captions, small_data):
    proc = run_cli("evaluate", "--hypotheses", test_captions.path, "--references", *references(small_data),
                   "--quiet")
    table = output_lines(proc)
    assert table[0].split() == ["metric", "value"]
    scores = {}   # by the label the table prints: which BLEU each BLEU is
    for line in table[1:]:
        match = re.match(r"^(\S.*?)\s+(\d+\.\d+)$", line)
        assert match, line
        scores[match.group(1)] = float(match.group(2))
    java = ["coco-bleu1", "coco-bleu2", "coco-bleu3", "coco-bleu4", "METEOR"] if shutil.which("java") else []
    expected = ["bleu1", "bleu2", "bleu3", "bleu4", "ROUGE-L", "CIDEr-D"] + java
    assert sorted(scores) == sorted(metric_label(key) for key in expected)
    assert "BLEU-4 (sacrebleu, tok:none)" in scores
    proc = run_cli("evaluate", "--hypotheses", test_captions.path, "--references", *references(small_data),
                   "--json", "--quiet")
    values = json.loads(proc.stdout.decode("utf-8"))
    assert sorted(values) == sorted(expected)
    for key, value in values.items():
        assert 0.0 <= value <= 100.0 and value == pytest.approx(scores[metric_label(key)], abs=0.006)
    assert values["bleu1"] >= values["bleu4"]


def test_visualize_captions(test_captions, small_data, tmp_path):
    output = str(tmp_path / "captions.png")
    run_cli("visualize", "captions", "--images", os.path.join(small_data.data, "test.images"), "--image-root",
            IMAGES, "--hypotheses", test_captions.path, "--references", *references(small_data), "--output", output,
            "--quiet")
    # the 8 test images in order, 4 a row (the default), each with its name, its caption and its 5 references
    pixels = read_png(output)
    assert pixels.shape[1] == round((4 * PANEL_WIDTH + 2 * FIGURE_MARGIN) * DPI)
    images = read_lines(os.path.join(small_data.data, "test.images"))
    assert len(images) == SUBSET_SIZES["test"]
    check_captions_grid(output, images, IMAGES, columns=4, dpi=DPI, title=False,
                        references=NUM_REFERENCES)


def test_visualize_curves(model, tmp_path):
    output = str(tmp_path / "curves.png")
    run_cli("visualize", "curves", "--model", model.dir, "--output", output, "--quiet")
    # a panel per family of the model's metrics (perplexity, BLEU, CIDEr-D, perplexity against time), each with
    # a curve per column of the family (train and val perplexity: two colours)
    keys = {key for _, columns in parse_metrics(os.path.join(model.dir, "metrics")) for key in columns}
    families = [[k for k in sorted(keys) if k.startswith(prefix)] for prefix in ("perplexity-", "bleu-", "cider-")]
    panels = [family for family in families if family]
    if "time-elapsed" in keys:
        panels.append(families[0])
    assert len(families[0]) == 2 and len(panels) >= 2, keys   # perplexity-train and -val, and another panel
    pixels = read_png(output)
    assert pixels.shape[:2] == (round(CURVE_PANEL_SIZE[1] * DPI),
                                round(len(panels) * CURVE_PANEL_SIZE[0] * DPI))
    assert drawn_curves(pixels, len(panels)) == [["C0", "C1"][:len(family)] for family in panels], panels


# --- 7. every CLI's help ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("module", ["prepare_data", "extract_features", "train", "captioner", "evaluate",
                                    "visualize"])
def test_help(module):
    proc = run_cli(module, "--help")
    assert proc.stdout.decode("utf-8").startswith("usage:")
