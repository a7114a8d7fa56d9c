"""Partial fine-tuning end to end on real images: features cached at EfficientNet-Lite0's ``blocks.14`` (with their
mirrored views), ``imcap.train --image-encoder-fine-tune`` training the last block and the head with the decoder,
and the captioner running the same split from images and from the cache; the same with a Gluon model-zoo net
(resnet18_v1 cut at ``features[:7]``), and fine-tuned models captioning without the CNN's weight file."""
import json
import os
import shutil

import mxnet as mx
import numpy as np
import pytest

from test.common import IMAGES, MODELS, requires_shared
from test.integration.conftest import read_lines, run_cli, train_args

pytestmark = requires_shared

CUT = "blocks.14"
TRAINING = ["--batch-size", "16", "--checkpoint-interval", "5", "--max-updates", "15", "--quiet",
            "--source-augmentations", "hflip"]


@pytest.fixture(scope="module")
def block_cache(small_data, tmp_path_factory):
    """The subset's images and their mirrored views cached at ``blocks.14`` (7 x 7 x 192), the lists in the cache."""
    cache = str(tmp_path_factory.mktemp("block_cache") / "cache")
    splits = ("train", "val", "test")
    run_cli("extract_features", "--input", *[os.path.join(small_data.data, s + ".images") for s in splits],
            "--image-root", IMAGES, "--output-root", cache, "--image-encoder-layer", CUT, "--augmentations", "hflip",
            "--batch-size", "8", "--quiet")
    return cache


def block_train_args(small_data, cache, output, *extra):
    args = train_args(small_data, output, *TRAINING, *extra)
    for option, name in (("--source", "train.features"), ("--validation-source", "val.features")):
        args[args.index(option) + 1] = os.path.join(cache, name)
    args[args.index("--source-root") + 1] = cache
    return args


@pytest.fixture(scope="module")
def finetuned(small_data, block_cache, tmp_path_factory):
    """A tiny model trained 15 updates with the CNN's last block and head fine-tuned (BatchNorm frozen)."""
    model_dir = str(tmp_path_factory.mktemp("finetuned") / "model")
    proc = run_cli("train", *block_train_args(small_data, block_cache, model_dir, "--image-encoder-fine-tune",
                                              "--image-encoder-learning-rate", "0.001"))
    return model_dir, proc.stderr.decode("utf-8", "replace")


def tail_params(model_dir):
    """The CNN tail's parameters of a model dir's params.best, by their name inside the tail's network."""
    prefix = "encoder_tail.net."
    return {k[len(prefix):]: v.asnumpy() for k, v in mx.nd.load(os.path.join(model_dir, "params.best")).items()
            if k.startswith(prefix)}


def pretrained():
    with np.load(os.path.join(MODELS, "efficientnet_lite0.npz")) as npz:
        return {"conv": npz["_conv_head.weight"], "mean": npz["_blocks.15._bn0.running_mean"],
                "expand": npz["_blocks.15._expand_conv.weight"]}


def test_the_tail_trains_and_keeps_frozen_batchnorm_statistics(finetuned):
    model_dir, _ = finetuned
    with open(os.path.join(model_dir, "config.yaml"), encoding="utf-8") as f:
        config = f.read()
    assert "layer: %s" % CUT in config and "encoder_tail:" in config
    metrics = [line.split("\t") for line in read_lines(os.path.join(model_dir, "metrics"))]
    assert len(metrics) == 3
    perplexities = [float(dict(field.split("=", 1) for field in line[1:])["perplexity-train"]) for line in metrics]
    assert perplexities[2] < perplexities[0]
    params, weights = tail_params(model_dir), pretrained()
    assert set(params) >= {"head.conv.weight", "head.bn.running_mean", "blocks.0.expand.conv.weight",
                           "blocks.0.expand.bn.running_mean"}
    assert not any(k.startswith("blocks.1.") for k in params)  # only blocks.15 and the head
    assert not np.allclose(params["head.conv.weight"], weights["conv"], atol=1e-6)
    assert not np.allclose(params["blocks.0.expand.conv.weight"], weights["expand"], atol=1e-6)
    np.testing.assert_array_equal(params["blocks.0.expand.bn.running_mean"], weights["mean"])


def test_a_tail_at_learning_rate_0_stays_pretrained(small_data, block_cache, tmp_path):
    model_dir = str(tmp_path / "model")
    run_cli("train", *block_train_args(small_data, block_cache, model_dir, "--image-encoder-fine-tune",
                                       "--image-encoder-learning-rate", "0", "--max-updates", "5"))
    with open(os.path.join(model_dir, "log"), encoding="utf-8") as f:
        assert "learning rate 0 (x0), BatchNorm statistics frozen" in f.read()
    params, weights = tail_params(model_dir), pretrained()
    np.testing.assert_array_equal(params["head.conv.weight"], weights["conv"])
    np.testing.assert_array_equal(params["blocks.0.expand.conv.weight"], weights["expand"])
    np.testing.assert_array_equal(params["blocks.0.expand.bn.running_mean"], weights["mean"])


def test_batchnorm_statistics_train_when_asked(small_data, block_cache, tmp_path):
    model_dir = str(tmp_path / "model")
    run_cli("train", *block_train_args(small_data, block_cache, model_dir, "--image-encoder-fine-tune",
                                       "--image-encoder-train-batchnorm", "--max-updates", "5"))
    params, weights = tail_params(model_dir), pretrained()
    # the first BatchNorm sees the cached features (the later ones batch-normalized inputs, as in pretraining)
    change = np.abs(params["blocks.0.expand.bn.running_mean"] - weights["mean"]).mean()
    assert change > 0.1, change


def test_captions_from_images_and_from_the_block_cache_agree(small_data, block_cache, finetuned):
    model_dir, _ = finetuned
    images = read_lines(os.path.join(small_data.data, "test.images"))
    features = read_lines(os.path.join(block_cache, "test.features"))

    def caption(root, lines, *extra):
        proc = run_cli("captioner", "--models", model_dir, "--source-root", root, "--output-type", "json",
                       "--beam-size", "3", "--test-time-augmentations", "hflip", *extra,
                       input="".join(line + "\n" for line in lines))
        return [json.loads(line) for line in proc.stdout.decode("utf-8").splitlines()]

    cached = caption(block_cache, features)
    pixels = caption(IMAGES, images, "--extract-image-features")
    assert len(cached) == len(images) and all(obj["caption"] for obj in cached)
    assert [obj["caption"] for obj in pixels] == [obj["caption"] for obj in cached]
    assert [obj["score"] for obj in pixels] == pytest.approx([obj["score"] for obj in cached], abs=1e-2)
    assert all(np.array(obj["attention"]).shape[1] == 49 for obj in cached)  # the head's 7 x 7 regions


def test_fine_tuning_features_of_the_head_is_refused(small_data, tmp_path):
    proc = run_cli("train", *train_args(small_data, str(tmp_path / "model"), "--image-encoder-fine-tune",
                                        "--max-updates", "1", "--quiet"), expect=1)
    error = proc.stderr.decode("utf-8", "replace").strip().splitlines()
    assert len(error) == 1 and "features cut at 'head' leave nothing to fine-tune" in error[0], error
    assert "--image-encoder-layer blocks.N" in error[0]


def test_self_critical_training_fine_tunes_the_tail(small_data, block_cache, finetuned, tmp_path):
    """Self-critical training from a fine-tuned model (``--params``) keeps training its CNN tail (on the mirrored
    views too) and keeps the frozen BatchNorm statistics."""
    start, _ = finetuned
    model_dir = str(tmp_path / "scst")
    args = block_train_args(small_data, block_cache, model_dir, "--image-encoder-fine-tune",
                            "--image-encoder-learning-rate", "0.001", "--params", os.path.join(start, "params.best"),
                            "--loss", "self-critical", "--self-critical-samples", "4", "--optimized-metric", "cider",
                            "--decode-and-evaluate", "8", "--initial-learning-rate", "0.001")
    args[args.index("--max-updates") + 1] = "4"
    args[args.index("--checkpoint-interval") + 1] = "2"
    run_cli("train", *args)
    metrics = [dict(field.split("=", 1) for field in line.split("\t")[1:])
               for line in read_lines(os.path.join(model_dir, "metrics"))]
    assert len(metrics) == 2 and all(0 <= float(m["cider-train"]) for m in metrics)
    assert all(0 <= float(m["cider-val"]) for m in metrics)
    before, after = tail_params(start), tail_params(model_dir)
    assert not np.allclose(after["head.conv.weight"], before["head.conv.weight"], atol=1e-7)
    np.testing.assert_array_equal(after["blocks.0.expand.bn.running_mean"], pretrained()["mean"])


def test_a_fine_tuned_model_captions_its_cache_without_the_weight_file(block_cache, finetuned, tmp_path,
                                                                       monkeypatch):
    """The model's params file holds every weight of its tail and the architecture comes from code: with a shared
    folder that has no efficientnet_lite0.npz, the model still captions its block cache, and the same."""
    model_dir, _ = finetuned
    features = read_lines(os.path.join(block_cache, "test.features"))

    def caption():
        proc = run_cli("captioner", "--models", model_dir, "--source-root", block_cache, "--beam-size", "3",
                       input="".join(line + "\n" for line in features))
        return proc.stdout.decode("utf-8").splitlines()

    expected = caption()
    monkeypatch.setenv("IMCAP_SHARED", str(tmp_path / "empty-shared"))
    assert caption() == expected and len(expected) == len(features)


# --- a Gluon model-zoo net ---------------------------------------------------------------------------------------

ZOO = "resnet18_v1"
ZOO_CUT = "7"  # features[:7] ends with stage3, a 14 x 14 x 256 map; the tail is stage4, then the global pooling


@pytest.fixture(scope="module")
def zoo_cache(small_data, tmp_path_factory):
    """A resnet18_v1 ``.params`` file made here (initialized with a fixed seed, not pretrained: these tests check the
    mechanics of the split, not caption quality; nothing is downloaded), and the subset's images cached at its
    ``features[:7]``."""
    from test.unit.test_encoder_tail import save_zoo_params
    folder = tmp_path_factory.mktemp("zoo_cache")
    os.makedirs(str(folder / "weights"))
    params = save_zoo_params(ZOO, str(folder / "weights" / (ZOO + ".params")))
    cache = str(folder / "cache")
    splits = ("train", "val", "test")
    run_cli("extract_features", "--input", *[os.path.join(small_data.data, s + ".images") for s in splits],
            "--image-root", IMAGES, "--output-root", cache, "--image-encoder", ZOO, "--image-encoder-model-path",
            params, "--image-encoder-layer", ZOO_CUT, "--batch-size", "8", "--quiet")
    return cache, params


@pytest.fixture(scope="module")
def zoo_finetuned(small_data, zoo_cache, tmp_path_factory):
    """A tiny model trained 15 updates with resnet18_v1's stage4 fine-tuned (BatchNorm frozen)."""
    cache, _ = zoo_cache
    model_dir = str(tmp_path_factory.mktemp("zoo_finetuned") / "model")
    args = block_train_args(small_data, cache, model_dir, "--image-encoder-fine-tune", "--image-encoder-learning-rate",
                            "0.001")
    args = [a for a in args if a not in ("--source-augmentations", "hflip")]
    run_cli("train", *args)
    return model_dir


def test_a_zoo_cache_records_where_its_weights_are(zoo_cache):
    cache, params = zoo_cache
    with open(os.path.join(cache, "cache.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    assert manifest["encoder"] == ZOO and manifest["layer"] == ZOO_CUT and manifest["feature_shape"] == [196, 256]
    assert manifest["model_path"] == ZOO + ".params" and manifest["model_file"] == os.path.abspath(params)


def test_a_zoo_tail_trains_and_keeps_frozen_batchnorm_statistics(zoo_cache, zoo_finetuned):
    _, weights_path = zoo_cache
    import yaml
    with open(os.path.join(zoo_finetuned, "config.yaml"), encoding="utf-8") as f:
        tail = yaml.safe_load(f)["encoder_tail"]
    assert (tail["encoder"], tail["layer"], tail["input_shape"], tail["output_shape"]) == (ZOO, ZOO_CUT, [196, 256],
                                                                                           [49, 512])
    assert len(read_lines(os.path.join(zoo_finetuned, "metrics"))) == 3
    params, pretrained = tail_params(zoo_finetuned), mx.nd.load(weights_path)
    # the tail's parameters keep their names in the net's .params file: stage4 (features.7) and nothing before
    assert params and all(k.startswith("features.7.") for k in params)
    assert set(params) == {k for k in pretrained if k.startswith("features.7.")}
    conv, mean = "features.7.0.body.0.weight", "features.7.0.body.1.running_mean"
    assert not np.allclose(params[conv], pretrained[conv].asnumpy(), atol=1e-6)
    np.testing.assert_array_equal(params[mean], pretrained[mean].asnumpy())


def test_zoo_captions_from_images_and_from_the_cache_agree(small_data, zoo_cache, zoo_finetuned, tmp_path):
    """From images, the captioner runs features[:7] with the weights the cache was made with (its model_file), then
    the model's stage4; from the cache, the model alone, which needs no weight file (moved away here)."""
    cache, _ = zoo_cache
    images = read_lines(os.path.join(small_data.data, "test.images"))
    features = read_lines(os.path.join(cache, "test.features"))

    def caption(model_dir, root, lines, *extra):
        proc = run_cli("captioner", "--models", model_dir, "--source-root", root, "--output-type", "json",
                       "--beam-size", "3", *extra, input="".join(line + "\n" for line in lines))
        return [json.loads(line) for line in proc.stdout.decode("utf-8").splitlines()]

    cached = caption(zoo_finetuned, cache, features)
    pixels = caption(zoo_finetuned, IMAGES, images, "--extract-image-features")
    assert len(cached) == len(images) and all(obj["caption"] for obj in cached)
    assert [obj["caption"] for obj in pixels] == [obj["caption"] for obj in cached]
    assert [obj["score"] for obj in pixels] == pytest.approx([obj["score"] for obj in cached], abs=1e-2)
    assert all(np.array(obj["attention"]).shape[1] == 49 for obj in cached)  # stage4's 7 x 7, not the cache's 14 x 14
    moved = str(tmp_path / "model")
    shutil.copytree(zoo_finetuned, moved)
    with open(os.path.join(moved, "config.yaml"), encoding="utf-8") as f:
        config = f.read()
    with open(os.path.join(moved, "config.yaml"), "w", encoding="utf-8") as f:
        f.write(config.replace(os.path.abspath(zoo_cache[1]), str(tmp_path / "gone.params")))
    assert [obj["caption"] for obj in caption(moved, cache, features)] == [obj["caption"] for obj in cached]


def test_a_zoo_cache_cut_at_the_pooling_is_refused(small_data, zoo_cache, tmp_path):
    cache, _ = zoo_cache
    pooled = str(tmp_path / "cache")
    shutil.copytree(cache, pooled)
    with open(os.path.join(pooled, "cache.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    with open(os.path.join(pooled, "cache.json"), "w", encoding="utf-8") as f:
        json.dump(dict(manifest, layer="8"), f)
    args = [a for a in block_train_args(small_data, pooled, str(tmp_path / "model"), "--image-encoder-fine-tune")
            if a not in ("--source-augmentations", "hflip")]
    proc = run_cli("train", *args, expect=1)
    error = proc.stderr.decode("utf-8", "replace").strip().splitlines()
    assert len(error) == 1 and "features of resnet18_v1 cut at '8' leave nothing to fine-tune" in error[0], error
