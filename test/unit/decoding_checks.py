"""What every decoder's tests share: building a small model and its inputs, the checks every decoder must pass
(step-by-step decoding from cached state equals full-sequence decoding; every parameter is trained), and parsing a
training command line."""
from typing import List, Tuple

import mxnet as mx
import numpy as np

from imcap.model import CaptionModel
from imcap.train import training_arg_parser


def make_model(config, seed: int = 1) -> CaptionModel:
    """A Xavier-initialized model of ``config``, the same for the same seed."""
    mx.random.seed(seed)
    model = CaptionModel(config, prefix="model_")
    model.initialize(mx.init.Xavier(factor_type="avg", magnitude=2.34))
    return model


def make_inputs(batch: int, length: int, regions: int, feature_dim: int, vocab: int, seed: int = 2
                ) -> Tuple[mx.nd.NDArray, mx.nd.NDArray]:
    """Random features ``(batch, regions, feature_dim)`` in the ReLU6 range and ``<s>``-initial target ids
    ``(batch, length)``, the last caption shorter (padded with 0)."""
    rng = np.random.RandomState(seed)
    features = mx.nd.array(rng.uniform(0, 6, size=(batch, regions, feature_dim)).astype(np.float32))
    target_in = rng.randint(4, vocab, size=(batch, length))
    target_in[:, 0] = 2  # <s>
    target_in[-1, 3:] = 0  # a shorter caption, padded
    return features, mx.nd.array(target_in, dtype="int32")


def check_stepwise_equals_full(model, features: mx.nd.NDArray, target_in: mx.nd.NDArray
                               ) -> Tuple[np.ndarray, np.ndarray, List[List[mx.nd.NDArray]]]:
    """Decode ``target_in (batch, length)`` for ``features (batch, regions, dim)`` once as a whole sequence and once
    step by step through ``model.encode``/``model.step``; assert equal log-probabilities and attention (1e-4),
    batch-major states and proper distributions.

    :return: the full-sequence log-probs ``(batch, length, vocab)``, attention ``(batch, length, regions)`` and the
        dynamic states after each step.
    """
    batch, length = target_in.shape
    regions, vocab = features.shape[1], model.config.vocab_size
    logits, attention_full = model(features, target_in)
    assert logits.shape == (batch, length, vocab) and attention_full.shape == (batch, length, regions)
    expected = mx.nd.log_softmax(logits, axis=-1).asnumpy()
    attention_full = attention_full.asnumpy()
    np.testing.assert_allclose(attention_full.sum(axis=-1), 1.0, atol=1e-5)

    static, dynamic = model.encode(features)
    assert len(static) == model.decoder.num_static_states and len(dynamic) == model.decoder.num_dynamic_states
    assert all(s.shape[0] == batch for s in static + dynamic)  # batch-major, for beam search
    states = []
    for t in range(length):
        log_probs, att, dynamic = model.step(target_in[:, t], static, dynamic)
        assert log_probs.shape == (batch, vocab) and att.shape == (batch, regions)
        assert all(d.shape[0] == batch for d in dynamic)
        np.testing.assert_allclose(log_probs.asnumpy(), expected[:, t], atol=1e-4, rtol=0)
        np.testing.assert_allclose(att.asnumpy(), attention_full[:, t], atol=1e-4, rtol=0)
        states.append(dynamic)
    np.testing.assert_allclose(np.exp(expected).sum(axis=-1), 1.0, atol=1e-5)
    assert not np.allclose(expected[:, 0], expected[:, 1])  # the steps differ
    return expected, attention_full, states


def check_every_parameter_is_trained(model, features: mx.nd.NDArray, target_in: mx.nd.NDArray) -> None:
    """One forward/backward pass (label smoothing and the attention penalty on) reaches every trainable parameter."""
    from imcap.loss import sequence_loss
    batch = target_in.shape[0]
    target_out = mx.nd.concat(target_in[:, 1:], mx.nd.zeros((batch, 1), dtype=target_in.dtype), dim=1)
    with mx.autograd.record():
        logits, attention = model(features, target_in)
        loss, _ = sequence_loss(logits, attention, target_out.astype("float32"), 0.1, 0.5)
    loss.backward()
    for param in model.collect_params().values():
        if param.grad_req != "null":
            assert np.abs(param.grad().asnumpy()).sum() > 0, param.name


def check_beam_search(model, vocab, features: mx.nd.NDArray, beam: int = 3, max_length: int = 8) -> list:
    """Beam search with n-best ``beam`` on ``features``: ``beam`` hypotheses per image with finite negative
    log-probabilities and one attention row per word and ``</s>``. Returns the hypotheses per image."""
    from imcap.beam_search import BeamSearch
    search = BeamSearch([model], vocab, beam_size=beam, max_output_length=max_length, nbest_size=beam,
                        keep_attention=True)
    results = search.search(features.asnumpy())
    assert len(results) == features.shape[0]
    for hyps in results:
        assert len(hyps) == beam
        for h in hyps:
            assert np.isfinite(h.log_prob) and h.log_prob < 0
            assert h.attention.shape == (len(h.ids) + 1, features.shape[1])
    return results


def parse_training_args(tmp_path, *options: str):
    """``imcap.train``'s options parsed from ``options``, with ``--output tmp_path/model``. The data options (the
    feature and caption files) are not asked for and stay None: what is built from these options here (model
    configs, the model dir's ``args.yaml``) never reads them."""
    parser = training_arg_parser()
    for action in parser._actions:
        action.required = False
    return parser.parse_args(["--output", str(tmp_path / "model")] + list(options))
