"""Captioner input parsing (line ends, bad UTF-8, empty lines, JSON input) and the output handlers
(one line per input line, failed lines included)."""
import io
import json

import numpy as np
import pytest

import imcap  # noqa: F401  (sets OMP_NUM_THREADS)
from imcap import arguments
from imcap import constants as C
from imcap.captioner import add_captioner_args, chunks, parse_input, parse_line, read_input_lines
from imcap.inference import PhraseResult
from imcap.phrases import IgnoredPhrase
from imcap.output_handler import (CaptionOutputHandler, CaptionResult, CaptionWithScoreOutputHandler,
                                  JSONOutputHandler, get_output_handler)
from imcap.utils import ImcapError


# --- input --------------------------------------------------------------------------------------------------------

def test_read_input_lines_crlf_and_last_line_without_newline():
    stream = io.BytesIO(b"a.npy\r\nb.npy\n\nc d.npy\r\nlast.npy")
    assert list(read_input_lines(stream)) == [(1, "a.npy", None), (2, "b.npy", None), (3, "", None),
                                              (4, "c d.npy", None), (5, "last.npy", None)]


def test_read_input_lines_invalid_utf8_is_an_error_not_an_exception():
    stream = io.BytesIO("ok.npy\n".encode() + b"bad\xff\xfe.npy\n" + "caf\u00e9.npy\r\n".encode())
    lines = list(read_input_lines(stream))
    assert len(lines) == 3
    assert lines[0] == (1, "ok.npy", None)
    number, text, error = lines[1]
    assert number == 2 and text is None and "UTF-8" in error
    assert lines[2] == (3, "caf\u00e9.npy", None)  # the lines after a bad one are read normally


def test_read_input_lines_empty_stream():
    assert list(read_input_lines(io.BytesIO(b""))) == []


@pytest.mark.parametrize("text", ["", "   ", "\t"])
def test_parse_line_rejects_empty_lines(text):
    with pytest.raises(ImcapError, match="empty"):
        parse_line(text, json_input=False)


def test_parse_line_plain_path_is_stripped():
    assert parse_line("  images/a b.jpg.npy ", json_input=False) == "images/a b.jpg.npy"


def test_parse_line_json_input():
    assert parse_line('{"image": "dir/x.jpg.npy"}', json_input=True) == "dir/x.jpg.npy"
    assert parse_line(' {"image": "x.npy", "id": 7} ', json_input=True) == "x.npy"  # other keys are ignored


@pytest.mark.parametrize("text,message", [
    ("x.npy", "JSON"),                     # not JSON
    ("{broken", "JSON"),
    ('["x.npy"]', "image"),                # not an object
    ('{"path": "x.npy"}', "image"),        # no "image"
    ('{"image": 3}', "image"),             # not a string
    ('{"image": "  "}', "empty"),
])
def test_parse_line_bad_json_input(text, message):
    with pytest.raises(ImcapError, match=message):
        parse_line(text, json_input=True)


def test_parse_line_reads_the_path_of_lines_with_phrases_and_sockeyes_text_key():
    assert parse_line('{"image": "x.npy", "constraints": ["a dog"]}', json_input=True) == "x.npy"
    assert parse_line('{"text": "y.npy", "avoid": ["a cat"]}', json_input=True) == "y.npy"
    assert parse_line('{"image": "x.npy", "text": "y.npy"}', json_input=True) == "x.npy"   # "image" first


def test_parse_input_keeps_constraints_for_the_captioner():
    item = parse_input('{"image": " x.npy ", "constraints": ["a dog"], "avoid": ["a cat"]}', json_input=True, line=3)
    assert (item.path, item.source, item.line) == ("x.npy", "x.npy", 3)
    assert item.constraints == ["a dog"] and item.avoid == ["a cat"]
    assert parse_input('{"image": "x.npy", "constraints": []}', json_input=True).constraints == []
    assert parse_input('{"image": "x.npy", "constraints": null}', json_input=True).constraints == []
    assert parse_input("x.npy", json_input=False).constraints == []
    # a value of the wrong type is not the line's error: it is kept as an ignored phrase whose warning the line's
    # result carries (the library's TypeError as a warning), and the rest of the line is captioned
    assert parse_input('{"image": "x.npy", "constraints": "a dog"}', json_input=True).constraints == [IgnoredPhrase(
        "a dog", "constraints is not a list of phrases but a str ('a dog'): ignored", ("a", "dog"))]
    assert parse_input('{"image": "x.npy", "avoid": [1, ""]}', json_input=True).avoid == [
        IgnoredPhrase("1", "avoid[0] must be a phrase (a string), got 1: ignored"), ""]


def test_image_encoder_options_default_to_the_model_in_the_captioner_only():
    from imcap.extract_features import add_extraction_args
    captioner = arguments.new_parser("captioner")
    add_captioner_args(captioner)
    args = captioner.parse_args(["--models", "m"])
    assert (args.image_encoder, args.image_encoder_model_path, args.image_encoder_layer, args.source_image_size,
            args.image_encoder_no_fusion) == (None, None, None, None, False)
    assert (args.device_ids, args.use_cpu) == ([-1], False)
    extractor = arguments.new_parser("extract")
    add_extraction_args(extractor)
    arguments.add_image_encoder_args(extractor)
    assert extractor.parse_args(["--input", __file__, "--output-root", "c"]).image_encoder == C.ENCODER_EFFICIENTNET_LITE0


def test_chunks():
    assert list(chunks(range(5), 2)) == [[0, 1], [2, 3], [4]]
    assert list(chunks([], 3)) == []


# --- output -------------------------------------------------------------------------------------------------------

def good_result():
    attention = np.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [1 / 3, 1 / 3, 1 / 3]], dtype=np.float32)
    return CaptionResult(4, ["a", "caf\u00e9", "dog"], score=-1.234567891, attention=attention,
                         nbest=[(["a", "caf\u00e9", "dog"], -1.2345), (["a", "dog"], -2.5)], source="img/4.jpg.npy")


def failed_result():
    return CaptionResult(5, [], error="no such file", source="img/missing.npy")


def one_line(handler_cls, result):
    stream = io.StringIO()
    handler_cls(stream).handle(result)
    text = stream.getvalue()
    assert text.endswith("\n") and text.count("\n") == 1, repr(text)
    return text[:-1]


def test_caption_output():
    assert one_line(CaptionOutputHandler, good_result()) == "a caf\u00e9 dog"
    assert one_line(CaptionOutputHandler, failed_result()) == ""


def test_caption_with_score_output():
    assert one_line(CaptionWithScoreOutputHandler, good_result()) == "-1.234568\ta caf\u00e9 dog"
    assert one_line(CaptionWithScoreOutputHandler, failed_result()) == "\t"


def test_json_output():
    obj = json.loads(one_line(JSONOutputHandler, good_result()))
    assert obj["line"] == 4 and obj["image"] == "img/4.jpg.npy"
    assert obj["caption"] == "a caf\u00e9 dog" and obj["tokens"] == ["a", "caf\u00e9", "dog"]
    assert obj["score"] == pytest.approx(-1.234567891)
    assert "error" not in obj
    assert np.array(obj["attention"]).shape == (3, 3)
    assert obj["attention"][0] == [0.5, 0.25, 0.25] and obj["attention"][2] == [0.33333] * 3  # rounded
    assert [n["caption"] for n in obj["nbest"]] == ["a caf\u00e9 dog", "a dog"]
    assert obj["nbest"][1]["score"] == -2.5


def test_json_output_of_lexical_constraints():
    result = good_result()
    assert "constraints_met" not in json.loads(one_line(JSONOutputHandler, result))   # a line without phrases
    result.constraints = [PhraseResult("A dog!", ["a", "dog"], False), PhraseResult("café", ["caf\u00e9"], True)]
    result.avoid = [PhraseResult("cat", ["cat"], True)]
    result.constraints_met = False
    result.warnings = ["constraint 'x' has no words: ignored"]
    obj = json.loads(one_line(JSONOutputHandler, result))
    assert obj["constraints_met"] is False
    assert obj["constraints"] == [{"phrase": "A dog!", "met": False}, {"phrase": "café", "met": True}]
    assert obj["avoid"] == [{"phrase": "cat", "met": True}]
    assert obj["warnings"] == ["constraint 'x' has no words: ignored"]


def test_json_output_of_a_failed_line():
    obj = json.loads(one_line(JSONOutputHandler, failed_result()))
    assert obj["error"] == "no such file"
    assert obj["line"] == 5 and obj["caption"] == "" and obj["tokens"] == []
    assert "attention" not in obj and "nbest" not in obj


def test_json_output_escapes_line_breaks_in_errors():
    result = CaptionResult(1, [], error="two\nlines", source="a\rb")
    assert json.loads(one_line(JSONOutputHandler, result))["error"] == "two\nlines"


@pytest.mark.parametrize("output_type", C.OUTPUT_TYPES)
def test_factory_writes_one_line_per_result(output_type):
    stream = io.StringIO()
    handler = get_output_handler(output_type, stream)
    results = [good_result(), failed_result(), good_result(), failed_result()]
    for result in results:
        handler.handle(result)
    assert stream.getvalue().count("\n") == len(results)
    assert len(stream.getvalue().split("\n")) == len(results) + 1
    expected_type = {C.OUTPUT_TYPE_CAPTION: CaptionOutputHandler, C.OUTPUT_TYPE_JSON: JSONOutputHandler,
                     C.OUTPUT_TYPE_CAPTION_WITH_SCORE: CaptionWithScoreOutputHandler}[output_type]
    assert type(handler) is expected_type
