"""Guided captioning end to end on real images: extract_features caches EfficientNet-Lite0's ImageNet class
probabilities beside the features (and adds them to a cache made without them); the captioner CLI guides captions of
cached features and of images through the CNN by the classes' words (disjunctive constraints), says which guided,
loses no line when the classes are missing, and takes disjunctive constraints as JSON input; the server reports the
guide and takes ``cat | dog`` constraints."""
import json
import os
import shutil

import numpy as np
import pytest
from starlette.testclient import TestClient

from imcap import arguments, serve
from imcap.features import classes_path, load_classes
from imcap.inference import CaptionInput, Captioner
from test.common import CHECK_IMAGES, COCO_DEV, IMAGES, requires_shared
from test.integration.conftest import read_lines, run_cli

pytestmark = requires_shared
CAT_CLASSES = range(281, 286)
PHOTOS = ["chelsea.jpg", "coffee.jpg", "rocket.jpg", "astronaut.jpg"]
# issue 34's photos of ../shared/data/coco-dev100: a brown bear, an elephant, a pizza, a couch
COCO_PHOTOS = ["000000235064.jpg", "000000054718.jpg", "COCO_val2014_000000557731.jpg", "000000354072.jpg"]


def contains(tokens, phrase):
    n = len(phrase)
    return any(tokens[i:i + n] == phrase for i in range(len(tokens) - n + 1))


def test_extraction_caches_class_probabilities_and_adds_them_to_an_old_cache(tmp_path):
    listing = tmp_path / "photos.images"
    listing.write_text("".join(p + "\n" for p in PHOTOS), encoding="utf-8")
    cache = tmp_path / "cache"
    args = ["--input", str(listing), "--image-root", CHECK_IMAGES, "--output-root", str(cache), "--batch-size", "4"]
    run_cli("extract_features", *args, "--quiet")
    probabilities = {p: load_classes(classes_path(str(cache / (p + ".npy")))) for p in PHOTOS}
    assert all(v.shape == (1000,) and abs(float(v.sum()) - 1) < 0.01 for v in probabilities.values())
    assert int(probabilities["chelsea.jpg"].argmax()) in CAT_CLASSES
    assert {967, 968, 504} & set(np.argsort(-probabilities["coffee.jpg"])[:5].tolist())
    # a cache made before (features without classes): the images are computed again, the features the same
    features = np.load(str(cache / "chelsea.jpg.npy"))
    os.remove(classes_path(str(cache / "chelsea.jpg.npy")))
    proc = run_cli("extract_features", *args)
    assert "3 already cached, 1 to compute" in proc.stderr.decode("utf-8")
    np.testing.assert_array_equal(np.load(str(cache / "chelsea.jpg.npy")), features)
    np.testing.assert_allclose(load_classes(classes_path(str(cache / "chelsea.jpg.npy"))),
                               probabilities["chelsea.jpg"], atol=1e-3)
    plain = tmp_path / "plain"
    run_cli("extract_features", *args[:4], "--output-root", str(plain), "--no-class-probabilities", "--quiet")
    assert os.path.isfile(plain / "chelsea.jpg.npy") and not os.path.exists(plain / "chelsea.jpg.classes.npy")


def test_the_captioner_cli_guides_cached_features_and_loses_no_line(model, small_data, tmp_path):
    features = read_lines(os.path.join(small_data.data, "test.features")) + \
        read_lines(os.path.join(small_data.data, "val.features"))
    orphan = tmp_path / "orphan.jpg.npy"   # features without their class probabilities
    shutil.copy(os.path.join(small_data.cache, features[0]), orphan)
    lines = features + [str(orphan), "missing.jpg.npy"]
    proc = run_cli("captioner", "--models", model.dir, "--source-root", small_data.cache, "--output-type", "json",
                   "--guide-with-classifier", "--guide-top-k", "3", "--guide-min-probability", "0.0",
                   input="".join(line + "\n" for line in lines))
    out = [json.loads(line) for line in proc.stdout.decode("utf-8").splitlines()]
    assert len(out) == len(lines)
    guided = [o for o in out[:len(features)] if o.get("guide")]
    assert guided, "no caption of the 16 images was guided"
    for o in guided:
        for g in o["guide"]:
            assert g["met"] is True and any(contains(o["tokens"], w.split()) for w in g["words"]), o
            assert 0.0 <= g["probability"] <= 1.0 and g["name"]
        assert len({w for g in o["guide"] for w in g["words"]}) == sum(len(g["words"]) for g in o["guide"])
    stderr = proc.stderr.decode("utf-8")
    assert out[-2]["caption"] and "guide" not in out[-2]
    assert "line %d: %s: no class probabilities" % (len(lines) - 1, classes_path(str(orphan))) in stderr
    assert out[-1]["error"] == "no such file"
    # a disjunctive constraint as JSON input: one of its alternatives, reported with them
    vocab = json.load(open(os.path.join(model.dir, "vocab.trg.json"), encoding="utf-8"))["idx_to_token"]
    words = [w for w in ("dog", "man", "boy", "girl") if w in vocab][:2]
    assert len(words) == 2
    line = json.dumps({"image": features[0], "constraints": [words, "the zebrafish|"]})
    proc = run_cli("captioner", "--models", model.dir, "--source-root", small_data.cache, "--json-input",
                   "--output-type", "json", input=line + "\n")
    result = json.loads(proc.stdout.decode("utf-8"))
    assert any(w in result["tokens"] for w in words)
    assert result["constraints"][0] == {"phrase": " | ".join(words), "met": True, "alternatives": words}
    assert result["constraints"][1]["met"] is False and "zebrafish" in proc.stderr.decode("utf-8")


def test_images_through_the_cnn_are_guided_by_the_same_forward_pass(model, small_data):
    paths = [os.path.join(IMAGES, image) for image in read_lines(os.path.join(small_data.data, "test.images"))[:4]]
    captioner = Captioner([model.dir], extract_image_features=True, guide_with_classifier=True, guide_top_k=3,
                          guide_min_probability=0.0)
    results = captioner.caption([CaptionInput(path=p) for p in paths])
    encoder = captioner.get_image_encoder()
    from imcap.vision.images import load_image
    for path, result in zip(paths, results):
        _, probabilities = encoder.encode_with_classes(load_image(path, encoder.input_size)[None])
        expected, _ = captioner.guide.choose(probabilities[0])
        assert [g.class_index for g in result.guide] == [g.class_index for g in expected]
        assert all(g.met for g in result.guide)
    assert any(r.guide for r in results)
    # the server: its JSON says which classes guided, and takes "a | b" constraints in a query parameter
    parser = arguments.new_parser("test")
    serve.add_serve_args(parser)
    args = parser.parse_args(["--models", model.dir, "--no-page", "--max-wait-ms", "0", "--quiet",
                              "--guide-with-classifier", "--guide-top-k", "3", "--guide-min-probability", "0.0"])
    app, service = serve.build_app(args)
    try:
        with TestClient(app) as client:
            with open(paths[0], "rb") as f:
                image = f.read()
            body = client.post("/v1/caption", params=[("constraints", "man | dog")], content=image).json()
            assert body["constraints"][0]["alternatives"] == ["man", "dog"] and body["constraints"][0]["met"]
            assert [g["class"] for g in body["guide"]] == [g.class_index for g in results[0].guide]
            empty = client.post("/v1/caption", params=[("constraints", " | ")], content=image)   # no alternative
            assert empty.status_code == 200 and "no alternative" in empty.json()["warnings"][0]
            assert client.get("/v1/health").json()["status"] == "ok"
    finally:
        service.close()


def test_soft_guidance_and_guidance_against_on_coco_photos_through_the_cli(model, tmp_path):
    photos = [os.path.join(COCO_DEV, "images", p) for p in COCO_PHOTOS] + [os.path.join(CHECK_IMAGES, "chelsea.jpg")]
    lines = "".join(p + "\n" for p in photos)
    common = ["--models", model.dir, "--extract-image-features", "--output-type", "json", "--guide-with-classifier"]
    plain = [json.loads(line) for line in run_cli("captioner", *common, "--guide-top-k", "0",
                                                   input=lines).stdout.decode("utf-8").splitlines()]
    assert len(plain) == 5 and not any("guide_pushed" in o or "guide_held_back" in o for o in plain)
    weight = 2.0
    proc = run_cli("captioner", *common, "--guide-top-k", "1", "--guide-min-probability", "0.5",
                   "--guide-soft-weight", str(weight), "--guide-against", "0.01", input=lines)
    guided = [json.loads(line) for line in proc.stdout.decode("utf-8").splitlines()]
    assert len(guided) == 5
    for o in guided:
        for w in o.get("guide_pushed", []):
            assert w["bonus"] == pytest.approx(weight * w["probability"], abs=2e-4) and 0 < w["probability"] <= 1
            assert w["written"] == (w["word"] in o["tokens"])
        held = {w["word"] for w in o.get("guide_held_back", [])}
        assert not held & set(o["tokens"]), o                 # held back: never written
        assert not held & {"man", "woman", "people", "person", "boy", "girl"}
    # the bear: its word is outside the tiny model's vocabulary, no hard constraint names it, nothing is held back
    assert "guide" not in guided[0] and "guide_held_back" not in guided[0]
    cat = guided[-1]   # an Egyptian cat at 0.82: "cat" required, the dog words held back
    assert len(cat["guide"]) == 1 and "cat" in cat["guide"][0]["words"]
    assert set(cat["guide"][0]["words"]) & set(cat["tokens"])
    assert cat["guide_pushed"][0]["word"] in cat["guide"][0]["words"]
    assert {"dog", "dogs"} <= {w["word"] for w in cat["guide_held_back"]}
    assert any(o["tokens"] != p["tokens"] for o, p in zip(guided, plain))
    # bad settings: one line naming the option, nothing captioned
    for option, value, message in (("--guide-soft-weight", "-1", "--guide-soft-weight must be a finite number of "
                                                                  "at least 0"),
                                   ("--guide-against", "1.5", "--guide-against must be in [0, 1]")):
        failed = run_cli("captioner", *common, option, value, input=lines, expect=None)
        assert failed.returncode != 0 and failed.stdout == b""
        assert message in failed.stderr.decode("utf-8")
    unguided = run_cli("captioner", "--models", model.dir, "--extract-image-features", "--guide-soft-weight", "1",
                       input=lines, expect=None)
    assert unguided.returncode != 0 and b"need a Captioner guided by the classifier" in unguided.stderr
