"""Partial fine-tuning end to end on real images: features cached at EfficientNet-Lite0's ``blocks.14`` (with their
mirrored views), ``imcap.train --image-encoder-fine-tune`` training the last block and the head with the decoder,
and the captioner running the same split from images and from the cache."""
import json
import os

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
