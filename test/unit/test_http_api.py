"""imcap.serving.http_api's request parsing, without a model: options from query parameters and the JSON field, multipart
bodies read in memory, and the status of each refusal; the attention grid ``GET /v1/model`` reports."""
from types import SimpleNamespace

import pytest

from imcap.serving.batching import SearchOptions
from imcap.encoder import EncoderConfig
from imcap.vision.tail import EncoderTailConfig
from imcap.serving.http_api import ApiError, attention_grid, parse_options, split_request
from imcap.inference import CaptionInput
from imcap.model import CaptionModel, ModelConfig
from imcap.phrases import IgnoredPhrase
from imcap.rnn import RNNDecoderConfig
from imcap.serving.web_page import split_phrases

DEFAULTS = SearchOptions(beam_size=5, nbest_size=1)


def status_of(call, *args):
    with pytest.raises(ApiError) as e:
        call(*args)
    return e.value.status, str(e.value)


def test_options_from_query_and_json():
    options = parse_options([("beam_size", "3"), ("constraints", "a dog"), ("constraints", "snow"),
                             ("attention", "false"), ("length_penalty_alpha", "0.5")],
                            '{"nbest_size": 2, "avoid": ["grass"], "allow_unk": true, "length_penalty_beta": 1}',
                            DEFAULTS)
    assert options.search == SearchOptions(beam_size=3, nbest_size=2, length_penalty_alpha=0.5,
                                           length_penalty_beta=1.0, allow_unk=True)
    assert options.constraints == ("a dog", "snow") and options.avoid == ("grass",) and options.attention is False
    assert parse_options([], None, DEFAULTS).search == DEFAULTS
    several = parse_options([("sample", "true"), ("sampling_top_p", "0.9"), ("seed", "4"), ("nbest_size", "8")],
                            '{"sampling_temperature": 0.7, "sampling_top_k": 3}', DEFAULTS).search
    assert several == SearchOptions(sample=True, nbest_size=8, seed=4, sampling_top_p=0.9, sampling_temperature=0.7,
                                    sampling_top_k=3)
    diverse = parse_options([("beam_size", "6"), ("diverse_beam_groups", "3"), ("diverse_beam_strength", "1")], None,
                            DEFAULTS).search
    assert diverse == SearchOptions(beam_size=6, diverse_beam_groups=3, diverse_beam_strength=1.0)
    assert parse_options([], None, DEFAULTS).attention is True


@pytest.mark.parametrize("query, options, message", [
    ([("beam", "3")], None, "unknown option 'beam'"),
    ([("path", "/etc/passwd")], None, "unknown option 'path'"),
    ([], '{"image": "/etc/passwd"}', "unknown option 'image'"),
    ([("beam_size", "three")], None, "beam_size: not an integer"),
    ([("beam_size", "3"), ("beam_size", "4")], None, "beam_size given twice"),
    ([("beam_size", "3")], '{"beam_size": 3}', "given both as a query parameter and in options"),
    ([("length_penalty_alpha", "nan")], None, "length_penalty_alpha: not a number"),
    ([("allow_unk", "maybe")], None, "allow_unk: not true or false"),
    ([("sample", "true"), ("sampling_temperature", "0")], None, "sampling_temperature must be a finite number above 0"),
    ([], '{"sample": true, "sampling_top_p": 0}', "sampling_top_p must be above 0 and at most 1"),
    ([("diverse_beam_groups", "2")], None, r"diverse_beam_groups must be at least 1 and divide beam_size (5)"),
    ([], '{"seed": 1.5}', "seed: not an integer"),
    ([("sample", "sometimes")], None, "sample: not true or false"),
    ([], '{"beam_size": 2.5}', "beam_size: not an integer"),
    ([], '{"beam_size": true}', "beam_size: not an integer"),
    ([], '{"constraints": "a dog"}', "constraints: not a list of phrases"),
    ([], '{"constraints": null}', "constraints: not a list of phrases"),
    ([], '{"constraints": [["cat"], []]}', "constraints: not a list of phrases or of lists of alternative phrases"),
    ([], '{"constraints": [["cat", 3]]}', "constraints: not a list of phrases or of lists of alternative phrases"),
    ([], '{"avoid": [["cat"]]}', "avoid: not a list of phrases"),
    ([], '[1, 2]', "not a JSON object"),
    ([], '{"beam_size": ', "not JSON"),
    ([("avoid", "x")] * 21, None, "at most 20 phrases"),
])
def test_bad_options_are_422(query, options, message):
    status, text = status_of(parse_options, query, options, DEFAULTS)
    assert status == 422 and message in text


def multipart(*parts, boundary="XyZ"):
    body = b""
    for name, data, filename in parts:
        body += b"--" + boundary.encode() + b"\r\n"
        body += b'Content-Disposition: form-data; name="%s"%s\r\n' % (
            name.encode(), b'; filename="%s"' % filename.encode() if filename else b"")
        body += b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n"
    body += b"--" + boundary.encode() + b"--\r\n"
    return "multipart/form-data; boundary=" + boundary, body


def test_multipart_and_raw_bodies():
    binary = bytes(range(256)) * 10
    content_type, body = multipart(("image", binary, "photo.jpg"), ("options", b'{"beam_size": 2}', None))
    assert split_request(content_type, body, 10_000) == (binary, '{"beam_size": 2}')
    content_type, body = multipart(("image", binary, None))  # a field without a file name keeps its bytes too
    assert split_request(content_type, body, 10_000) == (binary, None)
    assert split_request("image/jpeg", binary, 10_000) == (binary, None)
    assert split_request("", binary, 10_000) == (binary, None)


def test_bad_multipart_bodies():
    content_type, body = multipart(("options", b"{}", None))
    assert status_of(split_request, content_type, body, 1000) == (400, "the multipart body has no field 'image'")
    content_type, body = multipart(("image", b"x", "a.jpg"), ("file", b"/etc/passwd", None))
    status, text = status_of(split_request, content_type, body, 1000)
    assert status == 422 and "unknown multipart field 'file'" in text
    content_type, body = multipart(("image", b"x", "a.jpg"), ("image", b"y", "b.jpg"))
    assert status_of(split_request, content_type, body, 1000)[0] == 422
    content_type, body = multipart(("image", b"x" * 2000, "a.jpg"))
    assert status_of(split_request, content_type, body, 1000)[0] == 413
    assert status_of(split_request, "multipart/form-data", b"--x\r\n", 1000)[0] == 400


def test_disjunctive_constraints_from_query_and_json_are_what_a_caption_input_takes():
    options = parse_options([("constraints", "cat | kitten"), ("constraints", " | "), ("constraints", "red")], None,
                            DEFAULTS)
    assert options.constraints == (["cat", "kitten"], IgnoredPhrase(" | ", "constraint ' | ' has no alternative "
                                                                          "phrase: ignored"), "red")
    assert CaptionInput(data=b"x", constraints=list(options.constraints)).constraints[1].shown == " | "
    options = parse_options([], '{"constraints": [["cat", "kitten"], "red"], "avoid": ["grass"]}', DEFAULTS)
    assert options.constraints == (["cat", "kitten"], "red") and options.avoid == ("grass",)
    status, text = status_of(parse_options, [("constraints", "|" * 201)], None, DEFAULTS)
    assert status == 422 and "at most 20 phrases of at most 200 characters" in text


def test_split_phrases():
    assert split_phrases("a dog\n\n the snow ; a ball\n") == ["a dog", "the snow", "a ball"]
    assert split_phrases("") == [] and split_phrases(None) == []


def tiny_model(regions, dim, tail=None, models_dir=None):
    decoder = RNNDecoderConfig(num_hidden=8, attention_num_hidden=8, num_embed=4, encoder_num_hidden=8,
                               output_num_hidden=4)
    config = ModelConfig(vocab_size=6, encoder=EncoderConfig(num_regions=regions, feature_dim=dim, num_hidden=8),
                         decoder=decoder, num_embed=4, encoder_tail=tail)
    return CaptionModel(config, models_dir=models_dir, prefix="model_")


def test_attention_grid_is_that_of_the_regions_the_decoder_attends_to(tmp_path):
    """A model fine-tuning EfficientNet-Lite0 after blocks.10 reads a 14 x 14 cache but attends to the head's 7 x 7
    regions (the architecture is built without the weight file: nothing is initialized)."""
    tail = EncoderTailConfig(layer="blocks.10", input_shape=[196, 112], output_shape=[49, 1280])
    fine_tuned = tiny_model(49, 1280, tail, models_dir=str(tmp_path))
    assert fine_tuned.feature_shape == (196, 112)
    captioner = SimpleNamespace(models=[fine_tuned], feature_shape=fine_tuned.feature_shape)
    assert attention_grid(captioner) == (7, 7)
    assert attention_grid(SimpleNamespace(models=[tiny_model(196, 112)], feature_shape=(196, 112))) == (14, 14)
    assert attention_grid(SimpleNamespace(models=[tiny_model(50, 16)], feature_shape=(50, 16))) is None
    # an ensemble whose members attend to different grids has none
    assert attention_grid(SimpleNamespace(models=[fine_tuned, tiny_model(196, 112)], feature_shape=(196, 112))) is None
