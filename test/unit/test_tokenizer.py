"""Tokenizers (imcap.tokenizer) and prepare_data --tokenizer on real captions: Flickr8k-CN's Chinese by jieba and by
characters, Flickr8k's English by SentencePiece, Sockeye's pre-segmented pieces kept by ``none``; the record in the
data dir; segmentation for scoring; bad captions files are one error naming file and line, with nothing written."""
import json
import os

import pytest

from imcap import prepare_data
from imcap.tokenizer import (SENTENCEPIECE_FILE, TOKENIZER_FILE, join_cjk, join_subwords, load_tokenizer,
                             make_tokenizer, segment_for_scoring, train_sentencepiece)
from imcap.utils import ImcapError
from test.common import FLICKR8K, SHARED, requires_shared

FLICKR8K_CN = os.path.join(SHARED, "data", "flickr8k-cn")


def test_chinese_is_segmented_without_punctuation_and_written_without_spaces():
    jieba = make_tokenizer("jieba")
    assert jieba.language == "zh"
    assert jieba.tokenize("两只狗在雪地里玩耍。") == ["两只", "狗", "在", "雪地", "里", "玩耍"]
    assert jieba.detokenize(["两只", "狗", "在", "雪地", "里", "玩耍"]) == "两只狗在雪地里玩耍"
    chars = make_tokenizer("chars")
    assert chars.tokenize("走上台阶的女孩。") == ["走", "上", "台", "阶", "的", "女", "孩"]
    assert chars.detokenize(chars.tokenize("一个穿T恤的男人")) == "一个穿t恤的男人"
    assert join_cjk(["a", "dog", "在", "snow", "里"]) == "a dog在snow里"


def test_none_keeps_sockeyes_pieces_and_joins_them_only_when_asked():
    none = make_tokenizer("none")
    assert none.tokenize("a constr@@ aint  here") == ["a", "constr@@", "aint", "here"]
    assert none.detokenize(["a", "constr@@", "aint"]) == "a constr@@ aint"
    assert join_subwords("a constr@@ aint is here@@") == "a constraint is here"
    assert make_tokenizer("words").tokenize("constr@@ aint") == ["constr", "aint"]   # what the issue saw


def test_segmentation_for_scoring_treats_a_plain_caption_and_a_segmented_reference_alike():
    plain, segmented = "两只狗在雪地里玩耍", "两只 狗 在 雪地 里 玩耍"
    for scheme in ("zh", "char", "jieba"):
        assert segment_for_scoring(plain, scheme) == segment_for_scoring(segmented, scheme)
    assert segment_for_scoring(plain, "char").split() == list(plain)
    assert segment_for_scoring(segmented, "none") == segmented
    with pytest.raises(ImcapError, match="unknown scoring tokenization 'words'"):
        segment_for_scoring(plain, "words")


@requires_shared
def test_a_sentencepiece_model_of_the_training_captions_writes_rare_words_as_pieces(tmp_path):
    with open(os.path.join(FLICKR8K, "captions.tsv"), encoding="utf-8") as f:
        captions = [line.split("\t", 1)[1] for line in f][:3000]
    tokenizer = train_sentencepiece(captions, str(tmp_path), 500)
    assert os.path.isfile(tmp_path / SENTENCEPIECE_FILE) and len(tokenizer.pieces()) == 500
    pieces = tokenizer.tokenize("A skateboarder does a kickflip.")
    assert len(pieces) > 5 and "<unk>" not in pieces
    assert tokenizer.detokenize(pieces) == tokenizer.scoring_text(pieces) == "a skateboarder does a kickflip"
    loaded = load_tokenizer(str(tmp_path))
    assert loaded.name == "sentencepiece" and loaded.tokenize("a dog") == tokenizer.tokenize("a dog")
    copy = tmp_path / "model"
    loaded.copy_to(str(copy))
    assert load_tokenizer(str(copy)).tokenize("kickflip") == tokenizer.tokenize("kickflip")
    with pytest.raises(ImcapError, match="could not train a model of 100000 pieces"):
        train_sentencepiece(captions[:50], str(tmp_path / "small"), 100000)


def test_a_broken_record_or_model_is_one_error_naming_the_file(tmp_path):
    assert load_tokenizer(str(tmp_path)).name == "words"   # no record: data and models from before
    (tmp_path / TOKENIZER_FILE).write_text('{"tokenizer": "bpe"}', encoding="utf-8")
    with pytest.raises(ImcapError, match="tokenizer.json: 'tokenizer' must be one of words, none"):
        load_tokenizer(str(tmp_path))
    (tmp_path / TOKENIZER_FILE).write_text('{"tokenizer": "sentencepiece"}', encoding="utf-8")
    with pytest.raises(ImcapError, match="tokenizer.model: no such SentencePiece model"):
        load_tokenizer(str(tmp_path))
    (tmp_path / SENTENCEPIECE_FILE).write_bytes(b"not a model")
    with pytest.raises(ImcapError, match="tokenizer.model: not a SentencePiece model"):
        load_tokenizer(str(tmp_path))


def prepare(tmp_path, captions, *options, images=30):
    output = tmp_path / "data"
    prepare_data.main(["--captions", captions, "--splits", "train=%s" % os.path.join(FLICKR8K, "train.txt"),
                       "val=%s" % os.path.join(FLICKR8K, "val.txt"), "--max-images-per-split", str(images),
                       "--output", str(output), "--quiet", *options])
    return output


def read(path):
    return path.read_text(encoding="utf-8").splitlines()


@requires_shared
@pytest.mark.parametrize("name", ["jieba", "chars"])
def test_prepare_data_segments_flickr8k_cn_and_records_the_tokenizer(tmp_path, name):
    output = prepare(tmp_path, os.path.join(FLICKR8K_CN, "captions.tsv"), "--tokenizer", name)
    assert json.loads((output / TOKENIZER_FILE).read_text(encoding="utf-8")) == {"tokenizer": name, "language": "zh"}
    train = read(output / "train.captions")
    assert len(train) == 150 and sum(len(line.split()) > 1 for line in train) > 0.9 * len(train)   # segmented
    assert not any("。" in line for line in train)
    tokenizer = load_tokenizer(str(output))
    references = read(output / "val.captions.0")
    assert len(references) == 30 and all(r == tokenizer.scoring_text(r.split()) for r in references)
    if name == "chars":
        assert all(len(token) == 1 for line in train for token in line.split())


@requires_shared
def test_prepare_data_trains_sentencepiece_on_the_training_split(tmp_path):
    output = prepare(tmp_path, os.path.join(FLICKR8K, "captions.tsv"), "--tokenizer", "sentencepiece",
                     "--vocab-size", "300", images=200)
    tokenizer = load_tokenizer(str(output))
    train = read(output / "train.captions")
    assert any("▁" in line for line in train) and len({t for line in train for t in line.split()}) <= 300
    assert tokenizer.detokenize(train[0].split()) == "a black dog is running after a white dog in the snow"
    assert read(output / "val.captions.4")[0] == "two young children on a skateboard going across a sidewalk"
    with pytest.raises(SystemExit):
        prepare(tmp_path, os.path.join(FLICKR8K, "captions.tsv"), "--tokenizer", "sentencepiece")
    with pytest.raises(SystemExit):
        prepare(tmp_path, os.path.join(FLICKR8K, "captions.tsv"), "--vocab-size", "300")


@requires_shared
def test_a_captions_file_in_another_encoding_or_with_an_empty_caption_is_one_error_and_nothing_written(
        tmp_path, capsys):
    with open(os.path.join(FLICKR8K_CN, "captions.tsv"), encoding="utf-8") as f:
        lines = [next(f) for _ in range(12)]
    gbk = tmp_path / "gbk.tsv"
    gbk.write_bytes("".join(lines).encode("gbk"))
    empty = tmp_path / "empty.tsv"
    empty.write_text("".join(lines[:7]) + "1001773457_577c3a7d70.jpg\t \n" + "".join(lines[8:]), encoding="utf-8")
    for path, message in ((gbk, "gbk.tsv line 1: not valid UTF-8"),
                          (empty, "empty.tsv:8: empty caption of 1001773457_577c3a7d70.jpg")):
        with pytest.raises(SystemExit):
            prepare(tmp_path, str(path), "--tokenizer", "jieba")
        assert message in capsys.readouterr().err
        assert not (tmp_path / "data").exists() or not os.listdir(tmp_path / "data")
