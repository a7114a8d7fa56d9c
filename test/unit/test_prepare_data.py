"""Tests of imcap.prepare_data: the tokenizer, the three annotation readers and the files written."""
import json
import os
from typing import List

import pytest

from imcap import prepare_data
from imcap.tokenizer import tokenize
from imcap.utils import ImcapError


def shared_dir() -> str:
    """The shared data directory: $IMCAP_SHARED, else ``shared`` beside the checkout."""
    default = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared")
    return os.path.realpath(os.environ.get("IMCAP_SHARED", default))


FLICKR8K = os.path.join(shared_dir(), "data", "flickr8k")
needs_flickr8k = pytest.mark.skipif(not os.path.isfile(os.path.join(FLICKR8K, "captions.tsv")),
                                    reason="Flickr8k not found under %s" % FLICKR8K)


def lines(path: str) -> List[str]:
    with open(path, encoding="utf-8") as f:
        return f.read().split("\n")[:-1]


def run(argv: List[str]):
    return prepare_data.run_prepare_data(prepare_data.create_parser().parse_args(argv))


@pytest.mark.parametrize("text, expected", [
    ("A dog runs .", ["a", "dog", "runs"]),
    ("Two dogs play together in the snow .", ["two", "dogs", "play", "together", "in", "the", "snow"]),
    ("HELLO World", ["hello", "world"]),
    ("a boy in a t-shirt", ["a", "boy", "in", "a", "t", "shirt"]),
    ("A girl holding a horse 's lead", ["a", "girl", "holding", "a", "horse", "s", "lead"]),
    ("the dog's ball", ["the", "dog", "s", "ball"]),
    ("Wait!What?!(yes),\"no\";x:y/z_w", ["wait", "what", "yes", "no", "x", "y", "z", "w"]),
    ("  3 kids\tand\n2 dogs  ", ["3", "kids", "and", "2", "dogs"]),
    ("Ein Mädchen im Café, ÉCOLE", ["ein", "mädchen", "im", "café", "école"]),
    ("Cafe\u0301", ["café"]),  # combining accent is normalized into one letter
    ("Собака бежит по снегу .", ["собака", "бежит", "по", "снегу"]),
    ("", []),
    (" . , ! ", []),
])
def test_tokenize(text, expected):
    assert tokenize(text) == expected


@pytest.fixture(scope="module")
def flickr8k_output(tmp_path_factory):
    output = str(tmp_path_factory.mktemp("flickr8k"))
    summaries = run(["--captions", os.path.join(FLICKR8K, "captions.tsv"), "--output", output])
    return output, summaries


@needs_flickr8k
def test_flickr8k_real(flickr8k_output):
    output, summaries = flickr8k_output
    assert sorted(os.listdir(output)) == sorted(
        ["train.images", "train.captions", "tokenizer.json"]
        + ["%s.%s" % (split, suffix) for split in ("val", "test")
           for suffix in ["images", "all.images", "all.captions"] + ["captions.%d" % k for k in range(5)]])
    assert list(summaries) == ["train", "val", "test"]

    train_images, train_captions = lines(os.path.join(output, "train.images")), \
        lines(os.path.join(output, "train.captions"))
    assert len(train_images) == len(train_captions) == 30000
    assert len(set(train_images)) == 6000
    # Images in split-file order, each on 5 consecutive lines, captions in file order.
    assert train_images[:5] == ["2513260012_03d33305cf.jpg"] * 5
    assert train_captions[0] == "a black dog is running after a white dog in the snow"
    assert train_captions[1] == "black dog chasing brown dog through snow"
    assert summaries["train"].images == 6000 and summaries["train"].captions == 30000

    for split in ("val", "test"):
        images = lines(os.path.join(output, split + ".images"))
        assert len(images) == len(set(images)) == 1000
        for k in range(5):
            assert len(lines(os.path.join(output, "%s.captions.%d" % (split, k)))) == 1000
        all_images = lines(os.path.join(output, split + ".all.images"))
        assert len(all_images) == len(lines(os.path.join(output, split + ".all.captions"))) == 5000
        assert summaries[split].references == 5
    val_images = lines(os.path.join(output, "val.images"))
    assert val_images[0] == "2090545563_a4e66ec76b.jpg"
    assert lines(os.path.join(output, "val.captions.4"))[0] == "two young children on a skateboard going across a sidewalk"

    # test.txt line 12; captions.tsv line 768 is its third caption.
    assert lines(os.path.join(output, "test.images"))[11] == "1167669558_87a8a467d6.jpg"
    assert lines(os.path.join(output, "test.captions.2"))[11] == \
        "the man in the yellow t shirt is pulling a large grin on his face"
    assert lines(os.path.join(output, "test.captions.3"))[11] == \
        "there is a man wearing a yellow shirt and grimacing"


@needs_flickr8k
def test_flickr8k_max_images_per_split(tmp_path):
    output = str(tmp_path)
    summaries = run(["--captions", os.path.join(FLICKR8K, "captions.tsv"), "--output", output,
                     "--max-images-per-split", "3"])
    assert len(lines(os.path.join(output, "train.images"))) == len(lines(os.path.join(output, "train.captions"))) == 15
    assert lines(os.path.join(output, "val.images")) == ["2090545563_a4e66ec76b.jpg", "3393035454_2d2370ffd4.jpg",
                                                         "3695064885_a6922f06b2.jpg"]
    assert len(lines(os.path.join(output, "test.captions.0"))) == 3
    assert [s.images for s in summaries.values()] == [3, 3, 3]


def write(path, text: str) -> str:
    with open(str(path), "w", encoding="utf-8") as f:
        f.write(text)
    return str(path)


def test_flickr_token_format_and_padding(tmp_path):
    captions = write(tmp_path / "Flickr8k.token.txt",
                     "a.jpg#0\tA dog .\na.jpg#1\tThe dog runs !\nb.jpg#0\tA cat .\nc.jpg#0\t?!\n"
                     "b.jpg#1\tCats sleep .\nb.jpg#2\tA grey cat .\nd.jpg#0\tUnused .\n")
    write(tmp_path / "Flickr_8k.trainImages.txt", "b.jpg\nc.jpg\n")
    val = write(tmp_path / "Flickr_8k.devImages.txt", "a.jpg\nc.jpg\n")
    write(tmp_path / "Flickr_8k.testImages.txt", "b.jpg\n")
    out = str(tmp_path / "out")
    summaries = run(["--captions", captions, "--output", out])  # default split files: the original names
    assert list(summaries) == ["train", "val", "test"]
    # The empty caption of c.jpg is skipped in training.
    assert lines(os.path.join(out, "train.images")) == ["b.jpg"] * 3
    assert lines(os.path.join(out, "train.captions")) == ["a cat", "cats sleep", "a grey cat"]
    # Evaluation: one line per image, a.jpg's last reference repeated, c.jpg's empty reference kept.
    assert lines(os.path.join(out, "val.images")) == ["a.jpg", "c.jpg"]
    assert lines(os.path.join(out, "val.captions.0")) == ["a dog", ""]
    assert lines(os.path.join(out, "val.captions.1")) == ["the dog runs", ""]
    assert not os.path.exists(os.path.join(out, "val.captions.2"))
    assert lines(os.path.join(out, "val.all.images")) == ["a.jpg", "a.jpg"]
    assert lines(os.path.join(out, "val.all.captions")) == ["a dog", "the dog runs"]
    assert [lines(os.path.join(out, "test.captions.%d" % k)) for k in range(3)] == \
        [["a cat"], ["cats sleep"], ["a grey cat"]]

    run(["--captions", captions, "--output", out, "--splits", "train=" + val, "--train-splits", "none"])
    assert lines(os.path.join(out, "train.images")) == ["a.jpg", "c.jpg"]  # now an evaluation split


def test_flickr_malformed_line(tmp_path):
    captions = write(tmp_path / "captions.tsv", "a.jpg\tA dog .\na.jpg A dog without a tab\n")
    split = write(tmp_path / "train.txt", "a.jpg\n")
    with pytest.raises(ImcapError) as e:
        run(["--captions", captions, "--splits", "train=" + split, "--output", str(tmp_path / "out")])
    assert str(e.value).startswith("%s:2: " % captions)
    assert "tab" in str(e.value)
    assert not os.path.exists(str(tmp_path / "out"))


def test_flickr_image_without_captions(tmp_path):
    captions = write(tmp_path / "captions.tsv", "a.jpg\tA dog .\n")
    split = write(tmp_path / "val.txt", "a.jpg\n\nb.jpg\n")
    with pytest.raises(ImcapError) as e:
        run(["--captions", captions, "--splits", "val=" + split, "--output", str(tmp_path / "out")])
    assert str(e.value).startswith("%s:3: " % split)
    assert "b.jpg" in str(e.value)


def test_flickr_missing_split_file(tmp_path):
    captions = write(tmp_path / "captions.tsv", "a.jpg\tA dog .\n")
    with pytest.raises(ImcapError, match="train.txt: no such file"):
        run(["--captions", captions, "--output", str(tmp_path / "out")])


def karpathy_json(path) -> str:
    def image(filename, split, raws, filepath=None):
        entry = {"filename": filename, "split": split,
                 "sentences": [{"raw": raw, "tokens": tokenize(raw)} for raw in raws]}
        if filepath is not None:
            entry["filepath"] = filepath
        return entry
    data = {"dataset": "coco", "images": [
        image("t1.jpg", "test", ["A test image .", "Another one ."], "val2014"),
        image("r1.jpg", "restval", ["A restval image ."], "val2014"),
        image("a.jpg", "train", ["A train image .", "Second caption ."], "train2014"),
        image("v1.jpg", "val", ["One ,", "two", "three !"], "val2014"),
        image("v2.jpg", "val", ["Only one ."], "val2014"),
        image("b.jpg", "train", ["Tokens only ."]),
    ]}
    del data["images"][5]["sentences"][0]["raw"]
    return write(path, json.dumps(data))


def test_karpathy(tmp_path):
    path = karpathy_json(tmp_path / "dataset_coco.json")
    out = str(tmp_path / "out")
    summaries = run(["--format", "karpathy", "--karpathy-json", path, "--output", out])
    assert list(summaries) == ["train", "val", "test"]
    # restval joins train, in file order; filepath/filename; tokens when there is no raw.
    assert lines(os.path.join(out, "train.images")) == ["val2014/r1.jpg", "train2014/a.jpg", "train2014/a.jpg",
                                                        "b.jpg"]
    assert lines(os.path.join(out, "train.captions")) == ["a restval image", "a train image", "second caption",
                                                          "tokens only"]
    assert lines(os.path.join(out, "val.images")) == ["val2014/v1.jpg", "val2014/v2.jpg"]
    assert [lines(os.path.join(out, "val.captions.%d" % k)) for k in range(3)] == \
        [["one", "only one"], ["two", "only one"], ["three", "only one"]]
    assert lines(os.path.join(out, "val.all.captions")) == ["one", "two", "three", "only one"]
    assert lines(os.path.join(out, "test.images")) == ["val2014/t1.jpg"]
    assert summaries["val"].references == 3 and summaries["val"].captions == 4

    out2 = str(tmp_path / "out2")
    summaries = run(["--format", "karpathy", "--karpathy-json", path, "--no-restval-to-train", "--output", out2])
    assert list(summaries) == ["train", "restval", "val", "test"]
    assert lines(os.path.join(out2, "train.images")) == ["train2014/a.jpg", "train2014/a.jpg", "b.jpg"]
    assert lines(os.path.join(out2, "restval.images")) == ["val2014/r1.jpg"]
    assert lines(os.path.join(out2, "restval.captions.0")) == ["a restval image"]


def test_karpathy_bad_file(tmp_path):
    path = write(tmp_path / "dataset.json", '{"images": [{"filename": "a.jpg", "split": "train"}]}')
    with pytest.raises(ImcapError, match=r"images\[0\]: missing 'sentences'"):
        run(["--format", "karpathy", "--karpathy-json", path, "--output", str(tmp_path / "out")])
    path = write(tmp_path / "broken.json", '{"images": [')
    with pytest.raises(ImcapError, match="not valid JSON"):
        run(["--format", "karpathy", "--karpathy-json", path, "--output", str(tmp_path / "out")])
    with pytest.raises(ImcapError, match="needs --karpathy-json"):
        run(["--format", "karpathy", "--output", str(tmp_path / "out")])


def coco_json(path, images, annotations) -> str:
    data = {"info": {}, "licenses": [],
            "images": [{"id": i, "file_name": name, "height": 1, "width": 1} for i, name in images],
            "annotations": [{"id": n, "image_id": i, "caption": c} for n, (i, c) in enumerate(annotations)]}
    return write(path, json.dumps(data))


def test_coco(tmp_path):
    train = coco_json(tmp_path / "captions_train2014.json", [(9, "COCO_train2014_9.jpg"), (3, "COCO_train2014_3.jpg")],
                      [(3, "A cat on a mat."), (9, "A dog\nin a park."), (3, "The cat sleeps.")])
    val = coco_json(tmp_path / "captions_val2014.json", [(5, "COCO_val2014_5.jpg"), (1, "COCO_val2014_1.jpg")],
                    [(1, "One."), (5, "Five a."), (1, "Uno!"), (5, "Five b."), (5, "Five c.")])
    out = str(tmp_path / "out")
    summaries = run(["--format", "coco", "--coco", "val=" + val, "train=" + train, "--output", out])
    assert list(summaries) == ["train", "val"]
    assert lines(os.path.join(out, "train.images")) == ["COCO_train2014_9.jpg", "COCO_train2014_3.jpg",
                                                        "COCO_train2014_3.jpg"]
    assert lines(os.path.join(out, "train.captions")) == ["a dog in a park", "a cat on a mat", "the cat sleeps"]
    assert lines(os.path.join(out, "val.images")) == ["COCO_val2014_5.jpg", "COCO_val2014_1.jpg"]
    assert [lines(os.path.join(out, "val.captions.%d" % k)) for k in range(3)] == \
        [["five a", "one"], ["five b", "uno"], ["five c", "uno"]]
    assert summaries["val"].vocabulary_size == 6


def test_coco_errors(tmp_path):
    bad = coco_json(tmp_path / "bad.json", [(1, "a.jpg")], [(2, "Unknown image.")])
    with pytest.raises(ImcapError, match=r"annotations\[0\]: unknown image_id 2"):
        run(["--format", "coco", "--coco", "val=" + bad, "--output", str(tmp_path / "out")])
    with pytest.raises(ImcapError, match="expected SPLIT=PATH"):
        run(["--format", "coco", "--coco", bad, "--output", str(tmp_path / "out")])
    with pytest.raises(ImcapError, match="only used with --format coco"):
        run(["--coco", "val=" + bad, "--output", str(tmp_path / "out")])
