"""The model trained on real Flickr8k features (conftest's ``model``), exported to ONNX (imcap.export) and searched
on ONNX Runtime (imcap.onnx_steps): the captions of MXNet on the test images' cached features, constraints
included; ``python -m imcap.export`` and the captioner CLI's ``--backend onnxruntime`` against ``--backend mxnet``,
from cached features and the exported EfficientNet-Lite0 and its classifier against MXNet's; a model with a fine-tuned CNN tail.
Captioning from images and serving on ONNX Runtime are tested in the MXNet-free venv (test_runtime_venv.py)."""
import dataclasses
import json
import os
import shutil

import numpy as np
import pytest

from imcap.beam_search import BeamSearch
from imcap.model import load_model
from imcap.search_options import SearchOptions
from test.common import requires_shared
from test.common import IMAGES
from test.integration.conftest import read_lines
from test.unit.test_onnx_export import max_differences

pytestmark = requires_shared
pytest.importorskip("onnxruntime")


def test_the_trained_model_exported_captions_the_test_images_as_mxnet(model, small_data, tmp_path):
    from imcap.export import export_model
    from imcap.onnx_steps import OnnxSteps, load_onnx_model
    trained, vocab = load_model(model.dir)
    export_model(trained, str(tmp_path / "onnx"))
    exported = load_onnx_model(str(tmp_path / "onnx"), threads=1)
    paths = read_lines(os.path.join(small_data.data, "test.features"))
    features = np.stack([np.load(os.path.join(small_data.cache, p)).astype(np.float32) for p in paths])
    options = SearchOptions(beam_size=3, nbest_size=2)
    on_mxnet = BeamSearch([trained], vocab, options, keep_attention=True)
    on_onnx = BeamSearch(OnnxSteps([exported]), vocab, options, keep_attention=True)
    worst = max_differences(trained, exported, features, [vocab[w] for w in ("<s>", "a", "dog", "is", "running")])
    assert max(worst.values()) < 1e-5, worst
    constraints = [[[vocab["dog"]]] if i % 2 else [] for i in range(len(paths))]
    for args in ((), (constraints,)):
        expected, found = on_mxnet.search(features, *args), on_onnx.search(features, *args)
        assert [[h.ids for h in hyps] for hyps in found] == [[h.ids for h in hyps] for hyps in expected]
        np.testing.assert_allclose([h.score for hyps in found for h in hyps],
                                   [h.score for hyps in expected for h in hyps], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.concatenate([h.attention for hyps in found for h in hyps]),
                                   np.concatenate([h.attention for hyps in expected for h in hyps]), atol=1e-5)
    assert any(len(hyps[0].ids) > 1 for hyps in expected)


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    """The trained model exported by ``python -m imcap.export`` (params.best)."""
    from test.integration.conftest import run_cli
    out = str(tmp_path_factory.mktemp("onnx") / "exported")
    run_cli("export", "--models", model.dir, "--output", out, "--quiet")
    return out


def _captions(models, backend, small_data, *args, input):
    """STDOUT and STDERR of the captioner CLI with ``backend`` over ``models`` on the cached test features."""
    from test.integration.conftest import run_cli
    proc = run_cli("captioner", "--backend", backend, "--models", models, "--source-root", small_data.cache,
                   "--quiet", *args, input=input)
    return proc.stdout.decode("utf-8"), proc.stderr.decode("utf-8")


def _same_json(found, expected):
    """JSON output lines equal, their floats to 1e-5."""
    a, b = [json.loads(line) for line in found.splitlines()], [json.loads(line) for line in expected.splitlines()]
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert {k: v for k, v in x.items() if k not in ("score", "attention", "nbest")} == \
            {k: v for k, v in y.items() if k not in ("score", "attention", "nbest")}
        assert x["score"] == pytest.approx(y["score"], rel=1e-5, abs=1e-5)
        np.testing.assert_allclose(x["attention"], y["attention"], atol=2e-5)
        assert [n["caption"] for n in x.get("nbest", [])] == [n["caption"] for n in y.get("nbest", [])]


def test_the_captioner_cli_on_onnxruntime_writes_the_captions_of_mxnet(model, exported, small_data, tmp_path):
    """``--backend onnxruntime`` over the exported dir: the same captions as ``--backend mxnet`` over the model dir,
    plain, with n-best and repeat blocking, sampling and diverse beam search, guided by the cached class
    probabilities, with constraints and avoided phrases (``--json-input``, ``--avoid-list``) and as JSON with
    attention."""
    paths = read_lines(os.path.join(small_data.data, "test.features"))
    plain = "".join(p + "\n" for p in paths)
    for args in ((), ("--beam-size", "3", "--no-repeat-ngram-size", "2"),
                 ("--sample", "--seed", "3", "--nbest-size", "2", "--output-type", "json"),
                 ("--diverse-beam-groups", "2", "--beam-size", "4", "--nbest-size", "2", "--output-type", "json"),
                 ("--guide-with-classifier", "--guide-top-k", "3", "--guide-min-probability", "0.0", "--output-type",
                  "json")):
        found, expected = (_captions(m, b, small_data, *args, input=plain) for m, b in
                           ((exported, "onnxruntime"), (model.dir, "mxnet")))
        if "json" in args:
            _same_json(found[0], expected[0])
            assert "--guide-with-classifier" not in args or any(json.loads(line).get("guide")
                                                                 for line in found[0].splitlines())
        else:
            assert found[0] == expected[0] and found[0].strip()
    avoid_list = tmp_path / "avoid.txt"
    avoid_list.write_text("a man\n")
    lines = "".join(json.dumps({"image": p, "constraints": [["dog", "dogs"]] if i % 2 else ["in the water"],
                                "avoid": ["grass"] if i % 3 == 0 else []}) + "\n" for i, p in enumerate(paths))
    args = ("--json-input", "--output-type", "json", "--nbest-size", "2", "--avoid-list", str(avoid_list))
    found, expected = (_captions(m, b, small_data, *args, input=lines) for m, b in
                       ((exported, "onnxruntime"), (model.dir, "mxnet")))
    _same_json(found[0], expected[0])
    warnings = lambda err: [line for line in err.splitlines() if line.startswith("Warning")]  # noqa: E731
    assert warnings(found[1]) == warnings(expected[1])
    assert all(json.loads(line)["constraints_met"] for line in found[0].splitlines())


def test_the_onnxruntime_captioner_refuses_a_model_dir_and_another_vocabulary(model, exported, small_data, tmp_path):
    from test.integration.conftest import run_cli
    proc = run_cli("captioner", "--backend", "onnxruntime", "--models", model.dir, input="x.npy\n", expect=1)
    assert proc.stderr.decode("utf-8").strip() == (
        "Error: %s: a model dir, not an exported one (no export.json): python -m imcap.export --models %s --output DIR "
        "exports it for ONNX Runtime" % (model.dir, model.dir))
    other = tmp_path / "other"
    shutil.copytree(exported, str(other))
    with open(str(other / "vocab.trg.json"), "a", encoding="utf-8") as f:
        f.write(" ")   # another file than the one exported
    proc = run_cli("captioner", "--backend", "onnxruntime", "--models", str(other), input="x.npy\n", expect=1)
    err = proc.stderr.decode("utf-8").strip()
    assert err.startswith("Error: %s: another vocabulary than the one the graphs were exported with"
                          % (other / "vocab.trg.json")) and len(err.splitlines()) == 1
    without = tmp_path / "without"
    run_cli("export", "--models", model.dir, "--output", str(without), "--no-image-encoder", "--quiet")
    assert not (without / "image_encoder.onnx").exists()
    proc = run_cli("captioner", "--backend", "onnxruntime", "--models", str(without), "--extract-image-features",
                   input="x.jpg\n", expect=1)
    assert "this export has no image encoder" in proc.stderr.decode("utf-8")
    proc = run_cli("serve", "--backend", "onnxruntime", "--models", exported, "--image-encoder-layer", "blocks.10",
                   "--no-page", expect=1)
    assert "need the mxnet backend" in proc.stderr.decode("utf-8")


def test_the_exported_image_encoder_and_classifier_give_mxnets_features_and_classes(model, small_data, exported):
    """The exported EfficientNet-Lite0 (uint8 pixels in) against imcap.vision's on real test images: features to
    1e-5 of their scale, class probabilities to 1e-5 (the classifier on the host, the same code)."""
    from imcap.export.exported import load_exported
    from imcap.vision.image_encoder import ImageEncoder
    from imcap.vision.images import load_image
    encoder = load_exported(exported, threads=1).image_encoder
    assert encoder is not None and encoder.describe() == {"encoder": "efficientnet_lite0", "layer": "head",
                                                          "input_size": [224, 224], "model_path": None}
    reference = ImageEncoder("efficientnet_lite0", classify=True)
    images = np.stack([load_image(os.path.join(IMAGES, name), encoder.input_size)
                       for name in small_data.raw.images["test"][:6]])
    features, classes = encoder.encode_with_classes(images)
    expected, expected_classes = reference.encode_with_classes(images)
    assert features.shape == expected.shape == (6, 49, 1280)
    assert np.abs(features - expected).max() < 1e-5 * np.abs(expected).max()
    assert np.abs(classes - expected_classes).max() < 1e-5
    assert (classes.argmax(axis=1) == expected_classes.argmax(axis=1)).all()


def test_a_model_with_a_fine_tuned_efficientnet_tail_exports_its_tail_into_encode():
    """A model that continues features cached at blocks.14 (the last block and the head of EfficientNet-Lite0, with
    its pretrained weights moved as fine-tuning would) computes on ONNX Runtime what it computes on MXNet."""
    from imcap.encoder import EncoderConfig
    from imcap.export import encode_graph
    from imcap.model import ModelConfig
    from imcap.vision.tail import EncoderTailConfig
    from test.unit.test_onnx_export import make_config, make_model, onnx_model
    small = make_config()
    tail = EncoderTailConfig(encoder="efficientnet_lite0", layer="blocks.14", input_shape=[49, 192],
                             output_shape=[49, 1280])
    decoder = dataclasses.replace(small.decoder, encoder_num_hidden=64)
    config = ModelConfig(vocab_size=small.vocab_size, num_embed=32, decoder=decoder, encoder_tail=tail,
                         encoder=EncoderConfig(num_regions=49, feature_dim=1280, num_hidden=64))
    trained = make_model(config)
    assert trained.feature_shape == (49, 192) and trained.attention_grid == (7, 7)
    assert "Conv" in {node.op_type for node in encode_graph(trained).graph.node}
    features = np.random.RandomState(0).uniform(0, 4, size=(2, 49, 192)).astype(np.float32)
    worst = max_differences(trained, onnx_model(trained), features)
    assert max(worst.values()) < 1e-5, worst
