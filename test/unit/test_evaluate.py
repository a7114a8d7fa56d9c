"""Tests of imcap.evaluate: BLEU, ROUGE-L and CIDEr-D against hand-computed values, METEOR pinned (needs
Java: one JVM for the module), multiple and empty references, CLI checks; the coco-caption BLEU equal to
pycocoevalcap's COCOEvalCap computation on real Flickr8k captions (Java: the PTB tokenizer), per-image scores, several
captions per image, --compare's bad input."""
import json
import math
import os
import re
from collections import Counter

import pytest

from imcap import arguments
from imcap import evaluate, scoring
from imcap.utils import ImcapError, read_lines
from test.common import FLICKR8K, requires_shared


# A fixed example: 4 images with 2 to 4 references each (the empty lines are dropped).
HYPS = ["a dog runs on the grass",
        "a man rides a bike down the hill",
        "the the the cat",
        "two children play in the snow"]
REFS = [["a dog runs fast on the green grass", "a man rides a red bike down the hill",
         "the cat sat on the mat", "two kids are playing in the snow"],
        ["a brown dog is running on the grass", "a cyclist goes down a hill",
         "a cat is sitting on a mat", "children play in snow"],
        ["a dog plays outside", "", "a black cat on a rug", ""],
        ["", "", "the cat is sleeping", ""]]
# Pinned with pycocoevalcap 1.2 (METEOR: meteor-1.5.jar on OpenJDK 17).
CIDER_D = 2.8591449970055365
METEOR = 41.44949735665179


def _bleu_by_hand(matches, totals, sys_len, ref_len, order):
    """Corpus BLEU-order (0-100) from n-gram match counts and lengths (no smoothing needed here)."""
    brevity_penalty = 1.0 if sys_len >= ref_len else math.exp(1 - ref_len / sys_len)
    log_precisions = [math.log(m / t) for m, t in zip(matches[:order], totals[:order])]
    return 100 * brevity_penalty * math.exp(sum(log_precisions) / order)


def test_identical_is_100():
    hyps = ["a dog runs on the grass", "two men are playing soccer in a field"]
    scores = scoring.bleu_scores(hyps, [list(hyps)])
    assert sorted(scores) == ["bleu1", "bleu2", "bleu3", "bleu4"]
    for value in scores.values():
        assert value == pytest.approx(100.0)


def test_known_example_by_hand():
    hyps = ["a dog runs on the grass",
            "a man rides a bike",
            "the the the cat"]
    refs = [["a dog runs fast on the green grass",
             "a man rides a red bike down the hill",
             "the cat sat on the mat"]]
    # Clipped n-gram matches / hypothesis n-grams, per sentence:
    #   1: unigrams 6/6; bigrams 3/5 (a dog, dog runs, on the); trigrams 1/4 (a dog runs); 4-grams 0/3
    #   2: unigrams 5/5 (two 'a' in the reference too); bigrams 3/4 (a man, man rides, rides a);
    #      trigrams 2/3 (a man rides, man rides a); 4-grams 1/2 (a man rides a)
    #   3: unigrams 3/4 ('the' x3 clipped to the reference's 2, cat); bigrams 1/3 (the cat);
    #      trigrams 0/2; 4-grams 0/1
    matches = [6 + 5 + 3, 3 + 3 + 1, 1 + 2 + 0, 0 + 1 + 0]
    totals = [6 + 5 + 4, 5 + 4 + 3, 4 + 3 + 2, 3 + 2 + 1]
    sys_len, ref_len = 6 + 5 + 4, 8 + 9 + 6  # brevity penalty exp(1 - 23/15)
    scores = scoring.bleu_scores(hyps, refs)
    for order in range(1, 5):
        expected = _bleu_by_hand(matches, totals, sys_len, ref_len, order)
        assert scores["bleu%d" % order] == pytest.approx(expected, abs=1e-6)
    assert scores["bleu4"] == pytest.approx(
        100 * math.exp(1 - 23 / 15) * (14 / 15 * 7 / 12 * 3 / 9 * 1 / 6) ** 0.25, abs=1e-6)


def test_bleu1_at_least_bleu4():
    hyps = ["a black dog is running through the grass", "a woman sits on a bench near the water"]
    refs = [["a black dog runs across a grassy field", "a lady is sitting on a park bench by a lake"]]
    scores = scoring.bleu_scores(hyps, refs)
    assert 0 < scores["bleu4"] < scores["bleu3"] < scores["bleu2"] < scores["bleu1"] < 100


def test_more_references_raise_the_score():
    hyps = ["a black dog is running through the grass", "a woman sits on a bench near the water"]
    single = [["a black dog runs across a grassy field", "a lady is sitting on a park bench by a lake"]]
    double = single + [["a dog is running through the grass", "a woman sits near the water"]]
    one, two = scoring.bleu_scores(hyps, single), scoring.bleu_scores(hyps, double)
    for key in one:
        assert two[key] > one[key]


def test_empty_reference_is_skipped():
    # Scored as a length-0 reference, '' would be the closest length to the 3-token hypothesis and
    # cancel the brevity penalty; skipped, the 8-token reference alone sets it.
    hyps = ["a dog runs"]
    with_empty = scoring.bleu_scores(hyps, [["a dog runs on the green grass fast"], [""]])
    alone = scoring.bleu_scores(hyps, [["a dog runs on the green grass fast"]])
    assert with_empty == pytest.approx(alone)
    assert alone["bleu1"] == pytest.approx(100 * math.exp(1 - 8 / 3))


def test_line_without_reference_is_an_error():
    with pytest.raises(ImcapError, match="line 2 has no non-empty reference"):
        scoring.bleu_scores(["a dog", "a cat"], [["a dog", ""], ["a dog", " "]])


def _parse(argv):
    parser = arguments.new_parser("test")
    evaluate.add_evaluate_args(parser)
    return parser.parse_args(argv)


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def test_cli_table_and_json(tmp_path, capsys):
    hyp = _write(tmp_path / "hyp", ["a dog runs on the grass", "a man rides a bike"])
    ref0 = _write(tmp_path / "ref.0", ["a dog runs on the grass", "a man rides a red bike"])
    ref1 = _write(tmp_path / "ref.1", ["", "a man rides a bike"])
    scores = evaluate.run_evaluate(_parse(["--hypotheses", hyp, "--references", ref0, ref1,
                                           "--metrics", "bleu"]))
    assert scores["bleu4"] == pytest.approx(100.0)
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["metric", "value"]
    # every BLEU says which it is
    assert out[1].split() == ["BLEU-1", "(sacrebleu,", "tok:none)", "100.00"] and len(out) == 5

    # Families are reported in the order of METRICS whatever the order asked; CIDEr-D with 3 decimals.
    scores = evaluate.run_evaluate(_parse(["--hypotheses", hyp, "--references", ref0, ref1,
                                           "--metrics", "cider", "rouge", "bleu"]))
    assert list(scores) == ["bleu1", "bleu2", "bleu3", "bleu4", "ROUGE-L", "CIDEr-D"]
    out = capsys.readouterr().out.splitlines()
    assert out[4].split() == ["BLEU-4", "(sacrebleu,", "tok:none)", "100.00"]
    assert out[5].split() == ["ROUGE-L", "100.00"]
    assert out[6].split()[0] == "CIDEr-D" and out[6].split()[1] == "%.3f" % scores["CIDEr-D"]

    scores = evaluate.run_evaluate(_parse(["--hypotheses", hyp, "--references", ref0, "--json",
                                           "--metrics", "bleu", "rouge", "cider"]))
    assert json.loads(capsys.readouterr().out) == pytest.approx(scores)


def test_cli_default_metrics_without_java(tmp_path, capsys, monkeypatch):
    # All families by default; without Java, the coco-caption BLEU and METEOR are skipped with a one-line note each.
    monkeypatch.setattr(scoring.shutil, "which", lambda name: None)
    hyp = _write(tmp_path / "hyp", HYPS)
    refs = [_write(tmp_path / ("ref.%d" % k), stream) for k, stream in enumerate(REFS)]
    scores = evaluate.run_evaluate(_parse(["--hypotheses", hyp, "--references"] + refs))
    assert list(scores) == ["bleu1", "bleu2", "bleu3", "bleu4", "ROUGE-L", "CIDEr-D"]
    captured = capsys.readouterr()
    assert captured.err == ("BLEU (coco-caption) skipped: Java not found (pycocoevalcap's PTB tokenizer needs `java` on "
                            "PATH)\nMETEOR skipped: Java not found (pycocoevalcap's METEOR 1.5 needs `java` on PATH)\n")
    assert len(captured.out.splitlines()) == 7
    with pytest.raises(ImcapError, match="no metric computed"):
        evaluate.run_evaluate(_parse(["--hypotheses", hyp, "--references"] + refs + ["--metrics", "meteor"]))


def test_cli_line_count_mismatch_names_the_file(tmp_path):
    hyp = _write(tmp_path / "hyp", ["a dog", "a cat"])
    ref0 = _write(tmp_path / "ref.0", ["a dog", "a cat"])
    ref1 = _write(tmp_path / "ref.1", ["a dog"])
    with pytest.raises(ImcapError, match=r"ref\.1 has 1 lines, .*hyp has 2"):
        evaluate.run_evaluate(_parse(["--hypotheses", hyp, "--references", ref0, ref1]))


def _references_of(image, refs=REFS):
    return [stream[image] for stream in refs if stream[image].strip()]


def _lcs(a, b):
    """Length of the longest common subsequence of token lists ``a`` and ``b``."""
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a)):
        for j in range(len(b)):
            table[i + 1][j + 1] = table[i][j] + 1 if a[i] == b[j] else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


def _rouge_l_f(precision, recall, beta=1.2):
    return (1 + beta ** 2) * precision * recall / (recall + beta ** 2 * precision) if precision and recall else 0.0


def test_rouge_l_by_hand():
    # LCS (hypothesis, each reference) by hand, with the reference lengths:
    #   0: 'a dog runs on the grass' 6/8, 'a dog on the grass' 5/8, 'a dog' 2/4
    #   1: all 8 words 8/9, 'a down hill' 3/6
    #   2: 'the cat' 2/6, 'cat' 1/7, 'cat' 1/6, 'the cat' 2/4
    #   3: 'two in the snow' 4/7, 'children play in snow' 4/4
    lcs = [[(6, 8), (5, 8), (2, 4)], [(8, 9), (3, 6)], [(2, 6), (1, 7), (1, 6), (2, 4)], [(4, 7), (4, 4)]]
    for image, hyp in enumerate(HYPS):
        refs = _references_of(image)
        assert [(_lcs(hyp.split(), ref.split()), len(ref.split())) for ref in refs] == lcs[image]
    # Per image: the best precision and the best recall over the references, then F with beta 1.2.
    f_scores = []
    for image, hyp in enumerate(HYPS):
        precision = max(m for m, _ in lcs[image]) / len(hyp.split())
        recall = max(m / n for m, n in lcs[image])
        f_scores.append(_rouge_l_f(precision, recall))
    assert f_scores == pytest.approx([2.44 * 0.75 / 2.19, 2.44 * (8 / 9) / (8 / 9 + 1.44), 0.5,
                                      2.44 * (2 / 3) / (1 + 1.44 * 2 / 3)])
    scores = scoring.rouge_scores(HYPS, REFS)
    assert list(scores) == ["ROUGE-L"]
    assert scores["ROUGE-L"] == pytest.approx(100 * sum(f_scores) / 4, abs=1e-9)
    assert scores["ROUGE-L"] == pytest.approx(77.4211530267, abs=1e-6)


def _cider_d_by_hand(hyps, refs, n=4, sigma=6.0):
    """CIDEr-D as the COCO caption code defines it, written from its definition: TF-IDF n-gram vectors
    (raw counts; IDF = log(images) - log(images whose references have the n-gram)), hypothesis weights
    clipped by the reference's, cosine times a Gaussian length penalty, mean over the n orders and the
    references, times 10; the mean over the images."""
    def ngrams(sentence):
        words = sentence.split()
        return [Counter(tuple(words[i:i + k]) for i in range(len(words) - k + 1)) for k in range(1, n + 1)]

    images = len(hyps)
    doc_freq = Counter(gram for image_refs in refs
                       for gram in {g for ref in image_refs for order in ngrams(ref) for g in order})

    def tf_idf(counts):
        return {g: c * (math.log(images) - math.log(max(1, doc_freq[g]))) for g, c in counts.items()}

    total = 0.0
    for hyp, image_refs in zip(hyps, refs):
        hyp_vecs = [tf_idf(c) for c in ngrams(hyp)]
        score = 0.0
        for ref in image_refs:
            penalty = math.exp(-(len(hyp.split()) - len(ref.split())) ** 2 / (2 * sigma ** 2))
            for vh, vr in zip(hyp_vecs, [tf_idf(c) for c in ngrams(ref)]):
                norm_h, norm_r = math.sqrt(sum(v * v for v in vh.values())), math.sqrt(sum(v * v for v in vr.values()))
                if norm_h and norm_r:
                    clipped = sum(min(v, vr.get(g, 0.0)) * vr.get(g, 0.0) for g, v in vh.items())
                    score += penalty * clipped / (norm_h * norm_r)
        total += 10 * score / (n * len(image_refs))
    return total / images


def test_cider_d_by_hand_and_pinned():
    scores = scoring.cider_scores(HYPS, REFS)
    assert list(scores) == ["CIDEr-D"]
    refs = [_references_of(image) for image in range(len(HYPS))]
    assert scores["CIDEr-D"] == pytest.approx(_cider_d_by_hand(HYPS, refs), abs=1e-9)
    assert scores["CIDEr-D"] == pytest.approx(CIDER_D, abs=1e-9)
    # Empty references are dropped: scored as references they would lower the per-image mean.
    assert scoring.cider_scores(HYPS, REFS + [[""] * 4]) == pytest.approx(scores)


def test_cider_d_maximum_and_zero():
    # Every reference identical to its hypothesis (and distinct across images): the cosine is 1 for each
    # of the 4 orders and no length penalty, so 10 for each image.
    hyps = ["a dog runs on the grass", "a man rides a bike", "two children play in the snow"]
    assert scoring.cider_scores(hyps, [list(hyps)] * 3)["CIDEr-D"] == pytest.approx(10.0)
    # A 3-word caption has no 4-gram: that order contributes 0, at most 7.5.
    assert scoring.cider_scores(["a black dog", "a white cat"], [["a black dog", "a white cat"]])["CIDEr-D"] \
        == pytest.approx(7.5)
    # The IDF comes from the scored images: an n-gram in every image's references weighs 0, so one image
    # alone always scores 0.
    assert scoring.cider_scores(["a dog runs"], [["a dog runs"]])["CIDEr-D"] == 0.0
    # No shared n-gram at all: 0 (and ROUGE-L 0 too).
    hyps, refs = ["an orange kite flies", "green trees"], [["a dog runs on the grass", "a man rides a bike"]]
    assert scoring.cider_scores(hyps, refs)["CIDEr-D"] == 0.0
    assert scoring.rouge_scores(hyps, refs)["ROUGE-L"] == 0.0
    # Same n-grams, other lengths: the Gaussian length penalty exp(-delta^2 / 72) lowers the score.
    longer = scoring.cider_scores(["a dog runs on the grass", "a man rides a bike"],
                                   [["a dog runs on the grass in the sun on a warm summer day",
                                     "a man rides a bike"]])["CIDEr-D"]
    assert 5.0 < longer < 10.0


@pytest.fixture(scope="module")
def meteor_example():
    """METEOR of the fixed example with '|||' (the jar's field separator) inserted in a hypothesis and a
    reference: one JVM for the module (it takes about 5 s to start)."""
    if not scoring.java_available():
        pytest.skip("java not on PATH")
    hyps = list(HYPS)
    hyps[0] = "a dog runs ||| on the grass"
    refs = [list(stream) for stream in REFS]
    refs[1][0] = "a brown dog ||||| is running on the grass"
    return scoring.meteor_scores(hyps, refs)


def test_meteor_pinned(meteor_example):
    # The '|||' runs are removed before the jar sees them: the value is that of the clean example.
    assert list(meteor_example) == ["METEOR"]
    assert meteor_example["METEOR"] == pytest.approx(METEOR, abs=1e-3)


def test_meteor_without_java(monkeypatch, capsys):
    monkeypatch.setattr(scoring.shutil, "which", lambda name: None)
    assert scoring.evaluate(HYPS, REFS, ["meteor", "rouge"]) == pytest.approx(scoring.rouge_scores(HYPS, REFS))
    assert capsys.readouterr().err.startswith("METEOR skipped: Java not found")


def test_coco_inputs_drop_empty_and_normalize_spaces():
    gts, res = scoring.coco_inputs([" a  dog ", "a cat"], [["a dog  runs", "a cat"], ["", "a | cat |||"]],
                                    for_meteor=True)
    assert gts == {0: ["a dog runs"], 1: ["a cat", "a | cat"]}
    assert res == {0: ["a dog"], 1: ["a cat"]}
    with pytest.raises(ImcapError, match="line 1 has no reference METEOR can read"):
        scoring.coco_inputs(["a dog"], [["|||"]], for_meteor=True)
    with pytest.raises(ImcapError, match="line 2 has no non-empty reference"):
        scoring.cider_scores(["a dog", "a cat"], [["a dog", ""]])


def test_meteor_failure_is_an_error(tmp_path, monkeypatch, capsys):
    # A 'java' that dies at once: a clear error with its STDERR, and no hang on the scorer's lock.
    java = tmp_path / "java"
    java.write_text("#!/bin/sh\necho 'Error: no JVM here' >&2\nexit 1\n", encoding="utf-8")
    java.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ImcapError, match="METEOR .* failed: .*no JVM here"):
        scoring.meteor_scores(HYPS, REFS)
    # The CLI's default (all families): a note on STDERR, the others reported. Named: an error.
    hyp = _write(tmp_path / "hyp", HYPS)
    refs = [_write(tmp_path / ("ref.%d" % k), stream) for k, stream in enumerate(REFS)]
    scores = evaluate.run_evaluate(_parse(["--hypotheses", hyp, "--references"] + refs))
    assert list(scores) == ["bleu1", "bleu2", "bleu3", "bleu4", "ROUGE-L", "CIDEr-D"]
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and re.match(r"COCO-BLEU skipped: coco-caption BLEU: the PTB tokenizer \(java\) gave back \d+ of "
                                      r"\d+ captions; its stderr: Error: no JVM here$", err[0])
    assert err[1].startswith("METEOR skipped: METEOR (java -jar meteor-1.5.jar) failed")
    with pytest.raises(ImcapError, match="no JVM here"):
        evaluate.run_evaluate(_parse(["--hypotheses", hyp, "--references"] + refs + ["--metrics", "bleu", "meteor"]))
    with pytest.raises(ImcapError, match="PTB tokenizer .*no JVM here"):
        evaluate.run_evaluate(_parse(["--hypotheses", hyp, "--references"] + refs + ["--metrics", "coco-bleu"]))


def test_diversity_figures(tmp_path, capsys):
    from imcap.diversity import diversity_scores
    hyps = ["a man in a white shirt and a white shirt", "a dog runs", "a dog runs", "two dogs play"]
    scores = diversity_scores(hyps, training_captions=["a  dog runs", "a cat sits"])
    assert scores["repeated-trigram-%"] == 25.0          # only the first repeats "a white shirt"
    assert scores["distinct-captions"] == 3 and scores["vocabulary"] == 11
    assert scores["distinct-1"] == pytest.approx(11 / 19) and scores["distinct-2"] == pytest.approx(11 / 15)
    assert scores["novel-%"] == 50.0                     # "a dog runs" twice is a training caption
    assert "novel-%" not in diversity_scores(hyps)
    hyp = _write(tmp_path / "hyp", hyps)
    ref = _write(tmp_path / "ref", ["a dog"] * 4)
    train = _write(tmp_path / "train", ["a dog runs"])
    scores = evaluate.run_evaluate(_parse(["--hypotheses", hyp, "--references", ref, "--metrics", "bleu",
                                           "--training-captions", train]))
    assert list(scores)[4:] == ["repeated-trigram-%", "distinct-captions", "vocabulary", "distinct-1", "distinct-2",
                                "novel-%", "fluency", "slor"]
    out = capsys.readouterr().out
    assert re.search(r"^distinct-1 +0\.579$", out, re.M) and re.search(r"^fluency +-\d+\.\d{3}$", out, re.M)
    from imcap.fluency import CaptionLanguageModel
    expected = CaptionLanguageModel([["a", "dog", "runs"]]).corpus_scores([h.split() for h in hyps])
    assert scores["fluency"] == pytest.approx(expected["fluency"]) and scores["slor"] == pytest.approx(expected["slor"])
    fluent = evaluate.run_evaluate(_parse(["--hypotheses", _write(tmp_path / "good", ["a dog runs"] * 4),
                                           "--references", ref, "--metrics", "bleu", "--training-captions", train]))
    assert fluent["fluency"] > scores["fluency"]



def test_training_captions_are_segmented_as_the_hypotheses(tmp_path):
    """With --tokenize char, a model's character captions and its training captions (jieba's words, or characters)
    meet in the same segmentation: a caption the training set has is not novel, its words are not unknown."""
    hyp = _write(tmp_path / "hyp", ["两只狗在雪地里玩耍", "一个男人在跑步"])
    ref = _write(tmp_path / "ref", ["两只 狗 在 雪地 里 玩耍", "一个 男人 在 跑步"])
    for training in (["两只 狗 在 雪地 里 玩耍", "一只 猫"], ["两 只 狗 在 雪 地 里 玩 耍", "一 只 猫"]):
        train = _write(tmp_path / "train", training)
        scores = evaluate.run_evaluate(_parse(["--hypotheses", hyp, "--references", ref, "--metrics", "bleu",
                                               "--tokenize", "char", "--training-captions", train]))
        assert scores["novel-%"] == 50.0, training
        from imcap.fluency import CaptionLanguageModel
        chars = [list("两只狗在雪地里玩耍"), list("一只猫")]
        expected = CaptionLanguageModel(chars).corpus_scores([list("两只狗在雪地里玩耍"), list("一个男人在跑步")])
        assert scores["fluency"] == pytest.approx(expected["fluency"])


@requires_shared
def test_sentencepiece_training_captions_are_read_as_words(tmp_path):
    """The training captions of a SentencePiece data dir are pieces (``▁a ▁dog``): decoded by the tokenizer recorded
    beside them, the hypotheses (words) that are training captions are not novel, and fluency is the words'."""
    from imcap.fluency import CaptionLanguageModel
    from imcap.tokenizer import train_sentencepiece
    with open(os.path.join(FLICKR8K, "captions.tsv"), encoding="utf-8") as f:
        captions = [line.rstrip("\n").split("\t", 1)[1] for line in f][:3000]
    data = tmp_path / "data"
    data.mkdir()
    tokenizer = train_sentencepiece(captions, str(data), 500)
    tokenizer.save(str(data))
    words = [" ".join(tokenizer.tokenize(c)) for c in captions[:200]]
    assert all("\u2581" in line for line in words)
    train = _write(data / "train.captions", words)
    plain = [tokenizer.detokenize(line.split()) for line in words]
    hyp = _write(tmp_path / "hyp", [plain[0], plain[1], "a skateboarder does a kickflip over a zebra"])
    ref = _write(tmp_path / "ref", plain[:3])
    scores = evaluate.run_evaluate(_parse(["--hypotheses", hyp, "--references", ref, "--metrics", "bleu",
                                           "--training-captions", train]))
    assert scores["novel-%"] == pytest.approx(100 / 3)
    expected = CaptionLanguageModel([p.split() for p in plain]).corpus_scores(
        [plain[0].split(), plain[1].split(), "a skateboarder does a kickflip over a zebra".split()])
    assert scores["fluency"] == pytest.approx(expected["fluency"])


# --- the coco-caption BLEU, on real Flickr8k captions -------------------------------------------------------------

COCO_IMAGES = 300


@pytest.fixture(scope="module")
def flickr_raw_files(tmp_path_factory):
    """The raw captions.tsv captions (capitals, punctuation) of the first test images: the first as hypotheses, with
    an empty line and a line of punctuation only, the other four as references."""
    from imcap.prepare_data import read_flickr_captions
    from test.common import FLICKR8K
    if not os.path.isfile(os.path.join(FLICKR8K, "captions.tsv")):
        pytest.skip("Flickr8k not found under %s" % FLICKR8K)
    captions = read_flickr_captions(os.path.join(FLICKR8K, "captions.tsv"))
    images = [line.strip() for line in open(os.path.join(FLICKR8K, "test.txt"), encoding="utf-8")
              if line.strip()][:COCO_IMAGES]
    folder = tmp_path_factory.mktemp("coco")
    hyps = [captions[image][0] for image in images]
    hyps[3], hyps[7] = "", " . , !"
    files = {"hyp": _write(folder / "hyp", hyps)}
    for k in range(1, 5):
        files["ref.%d" % k] = _write(folder / ("ref.%d" % k), [captions[image][k] for image in images])
    files["per-image"] = str(folder / "per-image.jsonl")
    return files


@pytest.fixture(scope="module")
def coco_evalcap_bleu(flickr_raw_files):
    """BLEU-1..4 and the per-image BLEU of the files as pycocoevalcap's COCOEvalCap.evaluate computes them:
    PTBTokenizer on the references, then on the hypotheses (two JVMs), then Bleu(4)."""
    if not scoring.java_available():
        pytest.skip("java not on PATH")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
    hyps = read_lines(flickr_raw_files["hyp"])
    refs = [read_lines(flickr_raw_files["ref.%d" % k]) for k in range(1, 5)]
    gts = {i: [{"caption": stream[i]} for stream in refs] for i in range(len(hyps))}
    res = {i: [{"caption": hyp}] for i, hyp in enumerate(hyps)}
    tokenizer = PTBTokenizer()
    gts, res = tokenizer.tokenize(gts), tokenizer.tokenize(res)
    return Bleu(4).compute_score(gts, res, verbose=0)


def test_coco_caption_bleu_is_coco_evalcaps(flickr_raw_files, coco_evalcap_bleu, capsys):
    files = flickr_raw_files
    scores = evaluate.run_evaluate(_parse(["--hypotheses", files["hyp"], "--references"]
                                          + [files["ref.%d" % k] for k in range(1, 5)]
                                          + ["--metrics", "bleu", "coco-bleu", "--per-image", files["per-image"],
                                             "--json"]))
    captured = capsys.readouterr()
    assert "PTBTokenizer" not in captured.err          # the tokenizer's count of tokens is not passed on
    expected, per_image = coco_evalcap_bleu
    # to the digit: the same floats, times 100
    assert [scores["coco-bleu%d" % n] for n in range(1, 5)] == [100 * b for b in expected]
    assert 15 < scores["coco-bleu4"] < 30 and scores["coco-bleu4"] != scores["bleu4"]
    assert re.search(r"^BLEU-4 \(coco-caption, PTB\) +%.2f$" % (100 * expected[3]),
                     evaluate.format_table(scores), re.M)
    records = [json.loads(line) for line in read_lines(files["per-image"])]
    assert [r["line"] for r in records] == list(range(1, COCO_IMAGES + 1))
    assert [r["coco-bleu4"] for r in records] == [100 * b for b in per_image[3]]
    assert records[3]["hypothesis"] == "" and records[3]["coco-bleu4"] == pytest.approx(0, abs=1e-6)


def test_labels():
    assert scoring.metric_label("bleu4") == "BLEU-4 (sacrebleu, tok:none)"
    assert scoring.metric_label("coco-bleu2") == "BLEU-2 (coco-caption, PTB)"
    assert scoring.metric_label("self-BLEU-4") == "self-BLEU-4 (sacrebleu, tok:none)"
    assert scoring.metric_label("CIDEr-D") == "CIDEr-D"


# --- per-image scores ---------------------------------------------------------------------------------------------

def test_per_image_scores(tmp_path, capsys):
    import sacrebleu
    hyp = _write(tmp_path / "hyp", HYPS)
    refs = [_write(tmp_path / ("ref.%d" % k), stream) for k, stream in enumerate(REFS)]
    output = str(tmp_path / "per-image.jsonl")
    scores = evaluate.run_evaluate(_parse(["--hypotheses", hyp, "--references"] + refs
                                          + ["--metrics", "bleu", "rouge", "cider", "--per-image", output]))
    records = [json.loads(line) for line in read_lines(output)]
    assert [r["line"] for r in records] == [1, 2, 3, 4]
    assert records[2] == {"line": 3, "hypothesis": HYPS[2], "references": _references_of(2),
                          "sentence-bleu4": pytest.approx(records[2]["sentence-bleu4"]),
                          "ROUGE-L": pytest.approx(records[2]["ROUGE-L"]), "CIDEr-D": pytest.approx(records[2]["CIDEr-D"])}
    # the corpus CIDEr-D and ROUGE-L are the means of the per-image scores (CIDEr-D: IDF of the whole reference set)
    assert sum(r["CIDEr-D"] for r in records) / 4 == pytest.approx(scores["CIDEr-D"], abs=1e-12)
    assert sum(r["ROUGE-L"] for r in records) / 4 == pytest.approx(scores["ROUGE-L"], abs=1e-9)
    # sentence BLEU: sacrebleu's sentence_bleu (exp smoothing, effective order) against the image's references
    for i, record in enumerate(records):
        assert record["sentence-bleu4"] == pytest.approx(
            sacrebleu.sentence_bleu(HYPS[i], _references_of(i), tokenize="none").score, abs=1e-9)
    capsys.readouterr()


# --- several captions per image -----------------------------------------------------------------------------------

SETS = [["a dog runs on the grass", "a dog runs on the grass", "a brown dog is running"],
        ["a man rides a bike down the hill", "a cyclist goes down a hill", "a man on a bike"],
        ["the cat sat", "a black cat on a rug", "a cat is sitting on a mat"],
        ["two children play in the snow", "kids in the snow", "children play outside"]]


def _captioner_json(path, sets):
    """Captioner --output-type json lines with an n-best list per image."""
    lines = [json.dumps({"line": i + 1, "image": "%d.jpg" % i, "caption": s[0], "tokens": s[0].split(), "score": -1.0,
                         "nbest": [{"caption": c, "score": -1.0 - k} for k, c in enumerate(s)]})
             for i, s in enumerate(sets)]
    return _write(path, lines)


def test_sets_of_captions_text_and_json(tmp_path, capsys):
    from imcap.diversity import distinct_n
    refs = [_write(tmp_path / ("ref.%d" % k), stream) for k, stream in enumerate(REFS)]
    text = _write(tmp_path / "sets.txt", [c for s in SETS for c in s])
    options = ["--references"] + refs + ["--metrics", "bleu", "cider"]
    by_text = evaluate.run_evaluate(_parse(["--hypotheses", text, "--captions-per-image", "3"] + options))
    by_json = evaluate.run_evaluate(_parse(["--hypotheses", _captioner_json(tmp_path / "n.json", SETS)] + options))
    assert by_text == pytest.approx(by_json)
    # the first caption of each image is the one scored
    first = scoring.evaluate([s[0] for s in SETS], REFS, ["bleu", "cider"])
    assert {k: by_text[k] for k in first} == pytest.approx(first)
    assert by_text["captions-per-image"] == 3 and by_text["set-distinct-captions"] == pytest.approx(11 / 4)
    assert by_text["set-distinct-1"] == pytest.approx(sum(distinct_n([c.split() for c in s], 1) for s in SETS) / 4)
    assert by_text["set-distinct-1"] == pytest.approx((9 / 17 + 10 / 19 + 10 / 16 + 8 / 13) / 4)   # by hand
    # self-BLEU: each caption against the other two of its image; the repeated caption scores 100 against its twin
    streams = [[s[1], s[0], s[0]] for s in SETS], [[s[2], s[2], s[1]] for s in SETS]
    expected = scoring.bleu_scores([c for s in SETS for c in s],
                                   [[x for row in stream for x in row] for stream in streams])["bleu4"]
    assert by_text["self-BLEU-4"] == pytest.approx(expected)
    # oracle and mean CIDEr-D: every caption scored with the IDF of the whole reference set
    per_caption = scoring.cider_of_sets(SETS, REFS)
    assert [s[0] for s in per_caption] == pytest.approx(scoring.score_cider([s[0] for s in SETS], REFS).images["CIDEr-D"])
    assert by_text["oracle-CIDEr-D"] == pytest.approx(sum(max(s) for s in per_caption) / 4)
    assert by_text["mean-CIDEr-D"] == pytest.approx(sum(sum(s) for s in per_caption) / 12)
    assert by_text["oracle-CIDEr-D"] > by_text["CIDEr-D"] > 0
    out = capsys.readouterr().out
    assert re.search(r"^self-BLEU-4 \(sacrebleu, tok:none\) +\d+\.\d\d$", out, re.M)


def test_sets_of_other_sizes_and_per_image(tmp_path, capsys):
    # an n-best list may be shorter (constraints), a line without one is a set of one
    sets = [SETS[0], SETS[1][:1], SETS[2][:2], SETS[3]]
    refs = [_write(tmp_path / ("ref.%d" % k), stream) for k, stream in enumerate(REFS)]
    output = str(tmp_path / "per-image.jsonl")
    scores = evaluate.run_evaluate(_parse(["--hypotheses", _captioner_json(tmp_path / "n.json", sets), "--references"]
                                          + refs + ["--metrics", "cider", "--per-image", output]))
    assert scores["captions-per-image"] == 2.25
    records = [json.loads(line) for line in read_lines(output)]
    assert [[c["caption"] for c in r["captions"]] for r in records] == sets
    assert records[0]["captions"][0]["CIDEr-D"] == pytest.approx(records[0]["CIDEr-D"])
    assert scores["mean-CIDEr-D"] == pytest.approx(sum(c["CIDEr-D"] for r in records for c in r["captions"]) / 9)
    capsys.readouterr()


def test_bad_hypotheses_and_compare_files(tmp_path, capsys):
    ref = _write(tmp_path / "ref", ["a dog", "a cat"])
    five = _write(tmp_path / "five", ["a dog", "a dog", "a cat", "a cat", "a cow"])
    with pytest.raises(ImcapError, match=r"five has 5 lines, not a multiple of --captions-per-image 2"):
        evaluate.run_evaluate(_parse(["--hypotheses", five, "--references", ref, "--captions-per-image", "2"]))
    with pytest.raises(ImcapError, match=r"ref has 2 lines, .*five has 5$"):
        evaluate.run_evaluate(_parse(["--hypotheses", five, "--references", ref, "--metrics", "bleu"]))
    four = _write(tmp_path / "four", ["a dog", "a dog", "a cat", "a cat"])
    three = _write(tmp_path / "three", ["a dog", "a cat", "a cow"])
    with pytest.raises(ImcapError, match=r"three has 3 lines, .*four has 4 \(2 images x 2 captions\)"):
        evaluate.run_evaluate(_parse(["--hypotheses", four, "--references", ref, three, "--captions-per-image", "2"]
                                     + ["--metrics", "bleu"]))
    good = _captioner_json(tmp_path / "n.json", SETS[:2])
    bad = _write(tmp_path / "bad.json", read_lines(good) + ["a dog"])
    with pytest.raises(ImcapError, match=r"bad\.json line 3: not JSON"):
        evaluate.run_evaluate(_parse(["--hypotheses", bad, "--references", ref]))
    with pytest.raises(ImcapError, match=r"n\.json is the captioner's JSON: .*not --captions-per-image 2"):
        evaluate.run_evaluate(_parse(["--hypotheses", good, "--references", ref, "--captions-per-image", "2"]))
    no_caption = _write(tmp_path / "x.json", ['{"line": 1}', '{"line": 2}'])
    with pytest.raises(ImcapError, match=r"x\.json line 1: no 'caption' string"):
        evaluate.run_evaluate(_parse(["--hypotheses", no_caption, "--references", ref]))
    # --compare with another line count: one line naming both files, before anything is scored
    hyp = _write(tmp_path / "hyp", ["a dog", "a cat"])
    other = _write(tmp_path / "other", ["a dog", "a cat", "a cow"])
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main(["--hypotheses", hyp, "--references", ref, "--compare", other, "--quiet"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err == ("Error: %s has 3 lines, %s has 2: --compare needs the captions of the same images, in the same "
                   "order\n" % (other, hyp))
