"""The model trained on real Flickr8k features (conftest's ``model``), exported to ONNX (imcap.export) and searched
on ONNX Runtime (imcap.onnx_steps): the captions of MXNet on the test images' cached features, constraints
included."""
import os

import numpy as np
import pytest

from imcap.beam_search import BeamSearch
from imcap.model import load_model
from imcap.search_options import SearchOptions
from test.common import requires_shared
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
