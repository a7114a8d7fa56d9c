"""The exported model dir (``python -m imcap.export``, imcap.export.package; read back by imcap.export.exported), the
vocabulary read without GluonNLP (imcap.vocab.Vocabulary) and the Captioner's onnxruntime backend: the files, the
errors (missing files, a decoder not exported yet, an existing output, a failed export, a model dir given as an
export, another vocabulary, an ensemble of two vocabularies), and the captions of MXNet."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import imcap  # noqa: F401  (sets OMP_NUM_THREADS)
from imcap import constants as C
from imcap.model import ModelConfig, save_params
from imcap.utils import ImcapError
from imcap.vocab import Vocabulary, build_vocab, ids_to_tokens, load_vocab, never_generated_bias, save_vocab

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from imcap.export.__main__ import main as export_main  # noqa: E402
from imcap.export.exported import EXPORT_INFO_NAME, file_sha256, load_exported  # noqa: E402
from imcap.inference import CaptionInput, Captioner  # noqa: E402
from test.unit.test_onnx_export import VOCAB, make_config, make_features, make_model  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORDS = [["w%d" % i for i in range(VOCAB - 4)]]


def write_model_dir(folder, config=None, seed=1, words=WORDS, params=(C.PARAMS_BEST_NAME,)):
    """A model dir of a random tiny model (test_onnx_export's), its params saved under each of ``params``."""
    os.makedirs(str(folder), exist_ok=True)
    model = make_model(config or make_config(), seed=seed)
    model.config.save(os.path.join(str(folder), C.CONFIG_NAME))
    save_vocab(build_vocab(words), os.path.join(str(folder), C.VOCAB_TRG_NAME))
    for name in params:
        save_params(model, os.path.join(str(folder), name))
    return str(folder)


def run_export(capsys, *args):
    """``python -m imcap.export ARGS`` in this process: ``(exit code, STDERR)``."""
    try:
        export_main([str(a) for a in args] + ["--quiet"])
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_model_dir(tmp_path_factory.mktemp("export") / "model")


def test_the_vocabulary_without_gluonnlp_is_gluonnlps(tmp_path):
    vocab = build_vocab([["a", "dog", "runs"], ["a", "cat"]])
    path = str(tmp_path / C.VOCAB_TRG_NAME)
    save_vocab(vocab, path)
    plain = Vocabulary.load(path)
    assert plain.idx_to_token == vocab.idx_to_token and plain.token_to_idx == dict(vocab.token_to_idx)
    assert len(plain) == len(vocab) and plain["dog"] == vocab["dog"] and plain["zebra"] == vocab["zebra"] == 1
    assert plain[["a", "zebra", "</s>"]] == vocab[["a", "zebra", "</s>"]]
    assert (plain.unknown_token, plain.padding_token, plain.bos_token, plain.eos_token) == \
        (vocab.unknown_token, vocab.padding_token, vocab.bos_token, vocab.eos_token)
    assert plain.to_tokens([4, 5]) == vocab.to_tokens([4, 5]) and plain.to_tokens(4) == vocab.to_tokens(4)
    assert "dog" in plain and "zebra" not in plain
    ids = [2, vocab["a"], vocab["dog"], 3, vocab["cat"]]
    assert ids_to_tokens(plain, ids) == ids_to_tokens(vocab, ids) == ["a", "dog"]
    np.testing.assert_array_equal(never_generated_bias(plain, -1.0), never_generated_bias(vocab, -1.0))
    save_vocab(plain, str(tmp_path / "again.json"))   # the same format: GluonNLP reads it back
    assert load_vocab(str(tmp_path / "again.json")).idx_to_token == vocab.idx_to_token
    old = Vocabulary.load(os.path.join(REPO, "test", "data", "models", "rnn-0.1.0", C.VOCAB_TRG_NAME))
    assert old.idx_to_token == load_vocab(os.path.join(REPO, "test", "data", "models", "rnn-0.1.0",
                                                       C.VOCAB_TRG_NAME)).idx_to_token
    (tmp_path / "bad.json").write_text('{"idx_to_token": ["a"], "token_to_idx": {"a": 1}}')
    with pytest.raises(ImcapError, match="bad.json: not a vocabulary"):
        Vocabulary.load(str(tmp_path / "bad.json"))


def test_export_writes_a_self_contained_dir_that_captions_as_mxnet(model_dir, tmp_path, capsys):
    out = tmp_path / "exported"
    code, err = run_export(capsys, "--models", model_dir, "--output", out)
    assert code == 0, err
    assert sorted(os.listdir(str(out))) == sorted(["encode.onnx", "step.onnx", C.VOCAB_TRG_NAME, C.CONFIG_NAME,
                                                   EXPORT_INFO_NAME, "tokenizer.json"])
    assert not os.path.exists(str(out) + ".tmp")
    info = json.loads((out / EXPORT_INFO_NAME).read_text())
    assert info["params"] == C.PARAMS_BEST_NAME and info["imcap_version"] == imcap.__version__
    assert info["vocab_sha256"] == file_sha256(os.path.join(model_dir, C.VOCAB_TRG_NAME))
    assert info["opset"] == 17 and info["decoder"] == "rnn" and info["feature_shape"] == [9, 40]
    assert info["graphs"]["step"]["inputs"] == ["prev_ids", "static0", "static1", "dynamic0", "dynamic1"]
    assert info["graphs"]["encode"]["outputs"] == ["static0", "static1", "dynamic0", "dynamic1"]
    assert (out / C.CONFIG_NAME).read_bytes() == open(os.path.join(model_dir, C.CONFIG_NAME), "rb").read()
    features = make_features(batch=5)
    inputs = [CaptionInput(features=f, constraints=[["w3"]] if i == 2 else [], avoid=["w5"] if i == 3 else [])
              for i, f in enumerate(features)]
    settings = dict(beam_size=3, nbest_size=2, keep_attention=True, batch_size=2)
    expected = Captioner(model_dir, **settings).caption(inputs)
    found = Captioner(str(out), backend=C.BACKEND_ONNXRUNTIME, **settings).caption(inputs)
    assert [[t for t, _ in r.nbest] for r in found] == [[t for t, _ in r.nbest] for r in expected]
    assert [s for r in found for _, s in r.nbest] == pytest.approx([s for r in expected for _, s in r.nbest],
                                                                     rel=1e-5, abs=1e-5)
    assert [r.tokens for r in found] == [r.tokens for r in expected]
    assert [r.constraints_met for r in found] == [r.constraints_met for r in expected]
    for a, b in zip(found, expected):
        assert a.score == pytest.approx(b.score, rel=1e-5, abs=1e-5)
        np.testing.assert_allclose(a.attention, b.attention, atol=1e-5)


def test_the_checkpoint_option_and_force(model_dir, tmp_path, capsys):
    folder = write_model_dir(tmp_path / "model", seed=5, params=(C.PARAMS_BEST_NAME, "params.avg"))
    out = tmp_path / "exported"
    assert run_export(capsys, "-m", folder, "-o", out, "--checkpoint", "params.avg")[0] == 0
    assert json.loads((out / EXPORT_INFO_NAME).read_text())["params"] == "params.avg"
    assert load_exported(str(out)).model.checkpoint == "params.avg"   # what the server's /v1/model names
    before = (out / "step.onnx").read_bytes()
    code, err = run_export(capsys, "-m", model_dir, "-o", out)
    assert code == 1 and err.strip() == "Error: %s exists (--force replaces it)" % out
    assert (out / "step.onnx").read_bytes() == before   # untouched
    assert run_export(capsys, "-m", model_dir, "-o", out, "--force")[0] == 0
    assert (out / "step.onnx").read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported", "model"]   # no temporary dir left


def test_export_errors_are_one_line_and_leave_nothing(model_dir, tmp_path, capsys, monkeypatch):
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, str(broken))
    os.remove(str(broken / C.VOCAB_TRG_NAME))
    code, err = run_export(capsys, "-m", broken, "-o", tmp_path / "a")
    assert code == 1 and err.strip() == "Error: %s: not a model dir (no %s)" % (broken, C.VOCAB_TRG_NAME)
    code, err = run_export(capsys, "-m", model_dir, "-o", tmp_path / "a", "--checkpoint", "params.avg")
    assert code == 1 and "not a model dir (no params.avg)" in err
    from imcap.vision.tail import EncoderTailConfig
    config = make_config()
    fine_tuned = ModelConfig(vocab_size=VOCAB, encoder=config.encoder, num_embed=32, decoder=config.decoder,
                             encoder_tail=EncoderTailConfig(encoder="resnet18_v1", layer="6"))
    folder = tmp_path / "fine-tuned"
    shutil.copytree(model_dir, str(folder))
    fine_tuned.save(str(folder / C.CONFIG_NAME))
    code, err = run_export(capsys, "-m", folder, "-o", tmp_path / "a")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "%s: ONNX export of a model whose fine-tuned CNN tail is a model-zoo net (resnet18_v1) is not " \
           "implemented yet (EfficientNet-Lite tails export)" % folder in err
    hint = "(python -m imcap.export --no-image-encoder exports the model for cached features only)"
    for name, extraction, extra, message in (
            ("zoo", {"encoder": "resnet18_v1", "layer": "", "input_size": [224, 224]}, [],
             "ONNX export of its image encoder resnet18_v1 is not implemented yet (EfficientNet-Lite exports) "),
            ("lite", {"encoder": "efficientnet_lite0", "layer": "head", "input_size": [224, 224]},
             ["--image-encoder-model-path", tmp_path / "nowhere.npz"],
             "its image encoder: %s: no such weight file for efficientnet_lite0 " % (tmp_path / "nowhere.npz"))):
        folder = tmp_path / name
        shutil.copytree(model_dir, str(folder))
        ModelConfig(vocab_size=VOCAB, encoder=config.encoder, num_embed=32, decoder=config.decoder,
                    feature_extraction=extraction).save(str(folder / C.CONFIG_NAME))
        code, err = run_export(capsys, "-m", folder, "-o", tmp_path / "a", *extra)
        assert code == 1 and err.strip() == "Error: %s: %s%s" % (folder, message, hint), err
        shutil.rmtree(str(folder))
    import imcap.export.graphs

    def failing(model):
        raise ImcapError("the step graph failed")
    monkeypatch.setattr(imcap.export.graphs, "step_graph", failing)
    code, err = run_export(capsys, "-m", model_dir, "-o", tmp_path / "a")
    assert code == 1 and "the step graph failed" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "fine-tuned"]   # no a, no a.tmp


def test_loading_an_export_checks_its_files_and_its_vocabulary(model_dir, tmp_path, capsys):
    out = tmp_path / "exported"
    assert run_export(capsys, "-m", model_dir, "-o", out)[0] == 0
    with pytest.raises(ImcapError, match="a model dir, not an exported one .no export.json.: python -m imcap.export"):
        Captioner(model_dir, backend=C.BACKEND_ONNXRUNTIME)
    with pytest.raises(ImcapError, match="not an exported model"):
        load_exported(str(tmp_path))
    other = tmp_path / "other"
    shutil.copytree(str(out), str(other))
    save_vocab(build_vocab([["x%d" % i for i in range(VOCAB - 4)]]), str(other / C.VOCAB_TRG_NAME))
    with pytest.raises(ImcapError) as error:
        Captioner(str(other), backend=C.BACKEND_ONNXRUNTIME)
    assert str(error.value).startswith("%s: another vocabulary than the one the graphs were exported with"
                                       % (other / C.VOCAB_TRG_NAME))
    os.remove(str(other / "step.onnx"))
    with pytest.raises(ImcapError, match="an incomplete export .no step.onnx."):
        load_exported(str(other))
    second = tmp_path / "second"
    second_model = write_model_dir(tmp_path / "model2", words=[["x%d" % i for i in range(VOCAB - 4)]])
    assert run_export(capsys, "-m", second_model, "-o", second)[0] == 0
    with pytest.raises(ImcapError, match="has another vocabulary than"):
        Captioner([str(out), str(second)], backend=C.BACKEND_ONNXRUNTIME)
    for keywords, message in ((dict(checkpoints="params.avg"), "no checkpoints"),
                              (dict(extract_image_features=True), "this export has no image encoder .its model "
                                                                  "records none"),
                              (dict(image_encoder="efficientnet_lite2"), "need the mxnet backend"),
                              (dict(backend="tensorflow"), "unknown backend")):
        with pytest.raises(ImcapError, match=message):
            Captioner(str(out), **dict(dict(backend=C.BACKEND_ONNXRUNTIME), **keywords))
    captioner = Captioner(str(out), backend=C.BACKEND_ONNXRUNTIME)
    with pytest.raises(ImcapError, match="this export has no image encoder .* give cached features"):
        captioner.caption([CaptionInput(image=np.zeros((8, 8, 3), np.uint8))])


def test_an_export_of_another_format_or_with_an_operator_the_runtime_lacks_is_refused_naming_the_file(model_dir,
                                                                                                     tmp_path, capsys):
    import onnx
    from onnx import helper
    out = tmp_path / "exported"
    assert run_export(capsys, "-m", model_dir, "-o", out)[0] == 0
    info_path = out / EXPORT_INFO_NAME
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps(dict(info, format=99)))
    with pytest.raises(ImcapError) as error:
        load_exported(str(out))
    assert str(error.value) == ("%s: an export of another format (99, this imcap reads 1): export the model again"
                                % info_path)
    info_path.write_text(json.dumps(info))
    step = onnx.load(str(out / "step.onnx"))   # a node of an operator no runtime has
    step.graph.node.append(helper.make_node("Frobnicate", ["log_probs"], ["frobnicated"], domain="ai.imcap.test"))
    step.opset_import.append(helper.make_opsetid("ai.imcap.test", 1))
    onnx.save(step, str(out / "step.onnx"))
    with pytest.raises(ImcapError) as error:
        load_exported(str(out))
    message = str(error.value)
    assert message.startswith("%s: ONNX Runtime cannot load it (" % (out / "step.onnx")) and "\n" not in message
    assert "Frobnicate" in message or "ai.imcap.test" in message, message


def test_python_m_imcap_export_and_the_onnxruntime_captioner_load_no_mxnet(model_dir, tmp_path):
    """``python -m imcap.export`` runs; the captioner CLI with ``--backend onnxruntime`` captions a feature file in
    a process that never loads MXNet or GluonNLP."""
    out = tmp_path / "exported"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    result = subprocess.run([sys.executable, "-m", "imcap.export", "--models", model_dir, "--output", str(out)],
                            cwd=REPO, capture_output=True, text=True, env=env)
    assert result.returncode == 0 and "Exported %s" % model_dir in result.stderr, result.stderr
    np.save(str(tmp_path / "image.npy"), make_features(batch=1)[0])
    code = ("import sys\nfrom imcap.captioner import main\n"
            "main(['--backend', 'onnxruntime', '--models', sys.argv[1], '--input', sys.argv[2], '--quiet'])\n"
            "loaded = sorted(m for m in ('mxnet', 'gluonnlp') if m in sys.modules)\nassert not loaded, loaded\n")
    (tmp_path / "inputs").write_text("%s\n" % (tmp_path / "image.npy"))
    result = subprocess.run([sys.executable, "-c", code, str(out), str(tmp_path / "inputs")], cwd=REPO,
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    expected = Captioner(model_dir).caption([CaptionInput(path=str(tmp_path / "image.npy"))])
    assert result.stdout == expected[0].caption + "\n"
