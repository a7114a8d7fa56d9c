"""Model dirs written by older imcap versions still load and decode exactly as they did.

``test/data/models/rnn-0.1.0`` is a tiny RNN model saved by imcap 0.1.0 (commit 57fe390, before the Transformer,
convolutional and RNN-family decoders were added), with the logits, attention and beam-search captions that
version computed for a fixed input (``expected.npz``)."""
import os

import mxnet as mx
import numpy as np

import imcap  # noqa: F401  (sets OMP_NUM_THREADS)
from imcap.beam_search import BeamSearch
from imcap.model import load_model

MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "models", "rnn-0.1.0")


def test_rnn_model_of_version_0_1_0():
    model, vocab = load_model(MODEL)
    assert model.config.decoder_name == "rnn" and model.config.decoder.attention_type == "mlp"
    expected = np.load(os.path.join(MODEL, "expected.npz"))
    logits, attention = model(mx.nd.array(expected["features"]), mx.nd.array(expected["target_in"]))
    np.testing.assert_allclose(logits.asnumpy(), expected["logits"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(attention.asnumpy(), expected["attention"], rtol=1e-4, atol=1e-6)
    hyps = BeamSearch([model], vocab, beam_size=3, max_output_length=6).search(expected["features"])
    for hyp, ids in zip(hyps, expected["beam_ids"]):
        assert hyp[0].ids == [int(i) for i in ids if i >= 0]
