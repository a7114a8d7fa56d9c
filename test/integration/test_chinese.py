"""Captions in Chinese end to end: Flickr8k-CN's captions of the subset's images, segmented by jieba in prepare_data,
a tiny model trained on the cached features of the same images; the captioner writes Chinese without spaces, takes a
Chinese constraint as a user writes it, refuses the English-only guide with one clear error; evaluate scores on jieba
words without METEOR; the API answers in Chinese."""
import json
import os
import re

import pytest
from starlette.testclient import TestClient

from imcap import arguments, serve
from test.common import SHARED, requires_shared
from test.integration.conftest import NUM_REFERENCES, TINY_MODEL, read_lines, run_cli

pytestmark = requires_shared
FLICKR8K_CN = os.path.join(SHARED, "data", "flickr8k-cn")
CJK = re.compile(r"[\u4e00-\u9fff]")


def feature_list(images_file, features_file, cache):
    """The feature list of a .images file: each image's cached features (the cache's name is IMAGE.npy)."""
    lines = [image + ".npy" for image in read_lines(images_file)]
    assert all(os.path.isfile(os.path.join(cache, line)) for line in lines)
    with open(features_file, "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))
    return features_file


def train_tiny(data, lists, cache, model, updates):
    """Train the tiny model on prepared ``data`` and its feature ``lists``; the model dir."""
    run_cli("train", "--source", str(lists["train"]), "--target", str(data / "train.captions"),
            "--validation-source", str(lists["val"]), "--validation-target",
            *[str(data / ("val.captions.%d" % k)) for k in range(NUM_REFERENCES)], "--source-root", cache,
            "--output", str(model), *TINY_MODEL, "--batch-size", "16", "--checkpoint-interval", str(updates // 2),
            "--max-updates", str(updates), "--initial-learning-rate", "0.003", "--decode-and-evaluate", "8", "--quiet")
    return str(model)


@pytest.fixture(scope="module")
def chinese(small_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("chinese")
    wanted = {image for images in small_data.raw.images.values() for image in images}
    with open(os.path.join(FLICKR8K_CN, "captions.tsv"), encoding="utf-8") as f:
        lines = [line for line in f if line.split("\t", 1)[0] in wanted]
    captions = root / "captions.tsv"
    captions.write_text("".join(lines), encoding="utf-8")
    data = root / "data"
    run_cli("prepare_data", "--captions", str(captions), "--splits",
            *["%s=%s" % (split, path) for split, path in small_data.raw.split_files.items()], "--output", str(data),
            "--tokenizer", "jieba", "--quiet")
    assert read_lines(small_data.data + "/val.features") == [i + ".npy" for i in read_lines(small_data.data +
                                                                                              "/val.images")]
    lists = {split: feature_list(data / (split + ".images"), data / (split + ".features"), small_data.cache)
             for split in ("train", "val", "test")}
    model = train_tiny(data, lists, small_data.cache, root / "model", updates=60)
    return {"data": data, "model": model, "test": read_lines(lists["test"]), "cache": small_data.cache}


def test_the_captioner_writes_chinese_and_meets_a_chinese_constraint(chinese, tmp_path):
    assert json.load(open(os.path.join(chinese["model"], "tokenizer.json"))) == {"tokenizer": "jieba", "language": "zh"}
    lines = "".join(line + "\n" for line in chinese["test"])
    out = run_cli("captioner", "--models", chinese["model"], "--source-root", chinese["cache"], "--output-type",
                  "json", input=lines).stdout.decode("utf-8").splitlines()
    results = [json.loads(line) for line in out]
    assert len(results) == len(chinese["test"])
    for result in results:
        assert CJK.search(result["caption"]) and " " not in result["caption"], result   # no spaces between words
        assert result["caption"] == "".join(result["tokens"])
    vocab = json.load(open(os.path.join(chinese["model"], "vocab.trg.json"), encoding="utf-8"))["token_to_idx"]
    word = next(w for w in ("狗", "男人", "女孩", "草地") if w in vocab)
    constrained = run_cli("captioner", "--models", chinese["model"], "--source-root", chinese["cache"], "--json-input",
                          "--output-type", "json",
                          input=json.dumps({"image": chinese["test"][0], "constraints": [word]}) + "\n")
    result = json.loads(constrained.stdout.decode("utf-8"))
    assert result["constraints"] == [{"phrase": word, "met": True}] and word in result["caption"]
    guided = run_cli("captioner", "--models", chinese["model"], "--source-root", chinese["cache"],
                     "--guide-with-classifier", input=lines, expect=None)
    assert guided.returncode == 1 and guided.stdout == b""
    assert "the class words mapping is English; this model's captions are 'zh'" in guided.stderr.decode("utf-8")
    hypotheses = tmp_path / "test.hyp"
    hypotheses.write_text("".join(r["caption"] + "\n" for r in results), encoding="utf-8")
    references = [str(chinese["data"] / ("test.captions.%d" % k)) for k in range(NUM_REFERENCES)]
    scores = json.loads(run_cli("evaluate", "--hypotheses", str(hypotheses), "--references", *references,
                                "--tokenize", "jieba", "--json").stdout)
    assert "bleu1" in scores and "CIDEr-D" in scores and "METEOR" not in scores and scores["bleu1"] > 0
    refused = run_cli("evaluate", "--hypotheses", str(hypotheses), "--references", *references, "--tokenize", "char",
                      "--metrics", "meteor", expect=None)
    assert refused.returncode == 1 and b"--metrics meteor: English only, not with --tokenize char" in refused.stderr


def test_select_decoding_scores_on_the_segmentation_asked(chinese):
    """scripts/select_decoding.py --tokenize: the jieba model's captions and references are jieba words already
    (jieba gives the same scores as none); characters give others."""
    import subprocess
    import sys
    from test.integration.conftest import REPO, cli_env
    data = chinese["data"]
    scores = {}
    for scheme in ("none", "jieba", "char"):
        proc = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "select_decoding.py"), "--model",
                               chinese["model"], "--source", str(data / "val.features"), "--source-root",
                               chinese["cache"], "--references"]
                              + [str(data / ("val.captions.%d" % k)) for k in range(NUM_REFERENCES)]
                              + ["--beam-sizes", "1", "--tokenize", scheme], cwd=REPO, env=cli_env(),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        scores[scheme] = re.search(r"val BLEU-4 ([0-9.]+), CIDEr-D ([0-9.]+)", proc.stdout).groups()
    assert scores["jieba"] == scores["none"] and scores["char"] != scores["jieba"], scores


def test_the_api_answers_in_chinese(chinese):
    from test.integration.test_serve import png_bytes
    from PIL import Image
    parser = arguments.new_parser("test")
    serve.add_serve_args(parser)
    app, service = serve.build_app(parser.parse_args(["--models", chinese["model"], "--no-page", "--max-wait-ms", "0",
                                                      "--quiet"]))
    try:
        with TestClient(app) as client:
            image = png_bytes(Image.new("RGB", (224, 224), (90, 140, 60)))
            body = client.post("/v1/caption", params=[("constraints", "狗")], content=image).json()
            assert CJK.search(body["caption"]) and " " not in body["caption"], body
            assert body["constraints"][0]["phrase"] == "狗"
    finally:
        service.close()


def test_the_page_shows_chinese_captions_in_the_browser(chinese, small_data, tmp_path):
    from playwright.sync_api import sync_playwright
    from test.common import IMAGES
    from test.integration.test_serve_page import CHROMIUM, CHROMIUM_ARGS, running_server, upload_and_read_caption
    image = os.path.join(IMAGES, read_lines(os.path.join(small_data.data, "test.images"))[0])
    with running_server(chinese["model"], tmp_path) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            caption = upload_and_read_caption(page, server, image)
            assert CJK.search(caption) and " " not in caption, caption
            assert caption in page.locator("#nbest").inner_text()
            page.screenshot(path=str(tmp_path / "chinese-page.png"), full_page=True)
        finally:
            browser.close()


def segmented(text):
    """A stand-in for subword-nmt's output: words of six letters and more split after their third letter."""
    return " ".join(w[:3] + "@@ " + w[3:] if len(w) >= 6 else w for w in text.split())


@pytest.fixture(scope="module", params=["none", "sentencepiece"])
def english(request, small_data, tmp_path_factory):
    """A tiny English model of the subset with another tokenizer: Sockeye-style pre-segmented captions (none), or a
    SentencePiece model trained on the subset's captions."""
    root = tmp_path_factory.mktemp("tokenizer-" + request.param)
    captions = small_data.raw.captions
    options = ["--tokenizer", request.param]
    if request.param == "none":
        lines = read_lines(captions)
        captions = str(root / "segmented.tsv")
        with open(captions, "w", encoding="utf-8") as f:
            f.write("".join("%s\t%s\n" % (line.split("\t")[0], segmented(line.split("\t")[1].lower()))
                            for line in lines))
    else:
        options += ["--vocab-size", "200"]
    data = root / "data"
    run_cli("prepare_data", "--captions", captions, "--splits",
            *["%s=%s" % (split, path) for split, path in small_data.raw.split_files.items()], "--output", str(data),
            *options, "--quiet")
    lists = {split: feature_list(data / (split + ".images"), data / (split + ".features"), small_data.cache)
             for split in ("train", "val", "test")}
    model = train_tiny(data, lists, small_data.cache, root / "model", updates=40)
    return {"name": request.param, "model": model, "test": read_lines(lists["test"]), "cache": small_data.cache,
            "data": data, "lists": lists}


def test_pieces_stay_inside_the_model_and_users_write_words(english):
    lines = "".join(line + "\n" for line in english["test"])
    common = ["--models", english["model"], "--source-root", english["cache"], "--output-type", "json"]
    results = [json.loads(line) for line in run_cli("captioner", *common, input=lines).stdout.decode().splitlines()]
    assert len(results) == len(english["test"]) and all(r["caption"] for r in results)
    if english["name"] == "sentencepiece":
        assert any("▁" in t for r in results for t in r["tokens"])            # the model writes pieces ...
        assert not any("▁" in r["caption"] for r in results)                    # ... the caption is words
        constraint, written = "dog", "dog"                                      # a word, whatever its pieces
    else:   # Sockeye's pre-segmented form is the constraint, kept in the caption unless --join-subwords
        constraint, written = segmented("running"), "running"
    line = json.dumps({"image": english["test"][0], "constraints": [constraint]}) + "\n"
    result = json.loads(run_cli("captioner", *common, "--json-input", input=line).stdout)
    assert result["constraints"] == [{"phrase": constraint, "met": True}]
    assert constraint in result["caption"]
    if english["name"] == "none":
        assert written not in result["caption"].split()
        joined = json.loads(run_cli("captioner", *common, "--json-input", "--join-subwords", input=line).stdout)
        assert joined["tokens"] == result["tokens"] and written in joined["caption"].split()
        assert joined["caption"] == result["caption"].replace("@@ ", "")


def test_a_sentencepiece_model_that_does_not_match_the_vocabulary_is_refused(english, tmp_path):
    """A model dir (or a data dir) whose tokenizer.model is not the one its vocabulary was made with: one error
    naming both files, before anything is captioned or trained."""
    import shutil
    from imcap.tokenizer import load_tokenizer, train_sentencepiece
    if english["name"] != "sentencepiece":   # the none tokenizer writes any word: there is nothing to match
        load_tokenizer(english["model"]).check_vocabulary(["constr@@", "aint", "anything"], "vocab.trg.json")
        return
    other = tmp_path / "model"
    shutil.copytree(english["model"], str(other))
    train_sentencepiece(["%s plants and machines %d" % (w, i) for i, w in enumerate("abcdefghij" * 20)],
                        str(tmp_path / "sp"), 40)
    shutil.copy(str(tmp_path / "sp" / "tokenizer.model"), str(other / "tokenizer.model"))
    proc = run_cli("captioner", "--models", str(other), "--source-root", english["cache"],
                   input=english["test"][0] + "\n", expect=1)
    err = proc.stderr.decode("utf-8").strip()
    assert len(err.splitlines()) == 1 and proc.stdout == b""
    assert err.startswith("Error: %s: " % (other / "vocab.trg.json")) and "are no piece of the SentencePiece model " \
        "%s" % (other / "tokenizer.model") in err, err
    data = tmp_path / "data"   # prepare_data's output with another run's SentencePiece model: training refuses it
    shutil.copytree(str(english["data"]), str(data))
    shutil.copy(str(tmp_path / "sp" / "tokenizer.model"), str(data / "tokenizer.model"))
    proc = run_cli("train", "--source", str(english["lists"]["train"]), "--target", str(data / "train.captions"),
                   "--validation-source", str(english["lists"]["val"]), "--validation-target",
                   *[str(data / ("val.captions.%d" % k)) for k in range(NUM_REFERENCES)], "--source-root",
                   english["cache"], "--output", str(tmp_path / "trained"), *TINY_MODEL, "--max-updates", "1",
                   expect=1)
    assert "the vocabulary of %s: " % (data / "train.captions") in proc.stderr.decode("utf-8")
    assert not (tmp_path / "trained" / "params.best").exists()
