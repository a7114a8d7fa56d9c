"""The phrases of lexical constraints (imcap.phrases): what an input's constraints and avoid may hold (TypeError and
ValueError naming the field; the CLI's lenient reading), their word ids against a vocabulary, fitting constraints in
max_output_length, one typed check per phrase, and the report of which phrases a caption meets."""
import dataclasses
import logging

import pytest

from imcap.guide import GuideWord
from imcap.phrases import AVOID, CONSTRAINT, IgnoredPhrase, InputPhrases, ListedPhrase, PhraseCheck, PhraseResult, \
    check_phrases, encode_phrase, lenient_phrases, phrase_text, prepare_phrases, read_avoid_list, split_alternatives
from imcap.utils import ImcapError

VOCAB = {w: i for i, w in enumerate(["<pad>", "<unk>", "<s>", "</s>", "a", "dog", "cat", "kitten", "on", "the",
                                     "grass", "red", "runs"])}
NOT_MET = "constraint %s is not in the best caption found: no caption met every constraint within max_output_length"


# --- what an input's constraints and avoid may hold -------------------------------------------------------------

def test_lists_of_phrases_and_of_alternatives_are_taken_as_given():
    value = ["a dog", ["cat", "kitten"], "", IgnoredPhrase("3", "w")]
    assert check_phrases("constraints", value, alternatives=True) is value
    assert check_phrases("avoid", ("a", "b")) == ["a", "b"]   # a tuple: as a list
    assert check_phrases("avoid", []) == []


@pytest.mark.parametrize("value, alternatives, error, message", [
    (None, False, TypeError, "avoid is not a list of phrases but a NoneType (None)"),
    ("a dog", True, TypeError, "constraints is not a list of phrases but a str ('a dog')"),
    (["a", 3], True, TypeError, "constraints[1] must be a phrase (a string) or a list of alternative phrases, got 3"),
    (["a", ["b"]], False, TypeError, "avoid[1] must be a phrase (a string), got ['b']"),
    ([["b", b"c"]], True, TypeError, "constraints[0][1] must be a phrase (a string), got b'c'"),
    ([[]], True, ValueError, "constraints[0] is an empty list of alternative phrases"),
    (["x" * 100, {"k": "v" * 100}], True, TypeError, "got {'k': 'vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv..."),
])
def test_other_values_are_refused_naming_the_field(value, alternatives, error, message):
    with pytest.raises(error) as e:
        check_phrases("constraints" if alternatives else "avoid", value, alternatives)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_tool_reads_its_users_phrases_leniently_each_refused_part_ignored_with_its_message():
    assert lenient_phrases("constraints", None, alternatives=True) == []
    good = ["a dog", ["cat", "kitten"]]
    assert lenient_phrases("constraints", good, alternatives=True) is good
    assert lenient_phrases("constraints", "a dog", alternatives=True) == [IgnoredPhrase(
        "a dog", "constraints is not a list of phrases but a str ('a dog'): ignored", ("a", "dog"))]
    assert lenient_phrases("avoid", {"a": 1}) == [IgnoredPhrase(
        "{'a': 1}", "avoid is not a list of phrases but a dict ({'a': 1}): ignored")]
    read = lenient_phrases("constraints", [3, "dog", ["cat", 4], []], alternatives=True)
    assert read == [
        IgnoredPhrase("3", "constraints[0] must be a phrase (a string) or a list of alternative phrases, got 3: "
                           "ignored"),
        "dog",
        ["cat", IgnoredPhrase("4", "constraints[2][1] must be a phrase (a string), got 4: ignored")],
        IgnoredPhrase("[]", "constraints[3] is an empty list of alternative phrases (a disjunctive constraint needs "
                            "one at least): ignored")]
    assert check_phrases("constraints", read, alternatives=True) is read   # what it reads, the library takes
    assert lenient_phrases("avoid", [["a"]]) == [IgnoredPhrase("['a']", "avoid[0] must be a phrase (a string), "
                                                                        "got ['a']: ignored")]


def test_typed_alternatives_and_how_phrases_are_shown():
    assert split_alternatives("a dog") == "a dog"
    assert split_alternatives("cat | kitten|") == ["cat", "kitten"]
    ignored = split_alternatives(" | ")
    assert ignored == IgnoredPhrase(" | ", "constraint ' | ' has no alternative phrase: ignored")
    assert [phrase_text(p) for p in ("a dog", ["cat", "kitten"], ignored, ["cat", ignored])] == [
        "a dog", "cat | kitten", " | ", "cat |  | "]


# --- words and word ids -----------------------------------------------------------------------------------------

def test_a_phrase_is_tokenized_as_captions_and_encoded_against_the_vocabulary():
    assert encode_phrase("A red-Dog!", VOCAB) == (["a", "red", "dog"], [4, 11, 5], [])
    assert encode_phrase("a zebra", VOCAB) == (["a", "zebra"], [], ["zebra"])
    assert encode_phrase("...", VOCAB) == ([], [], [])


def test_the_avoid_list_keeps_its_usable_phrases(caplog):
    with caplog.at_level(logging.INFO, logger="imcap.phrases"):
        listed = read_avoid_list(["grass", "", "  ", "...", "a zebra", "The cat"], VOCAB)
    assert listed == [ListedPhrase("grass", ["grass"], [10]), ListedPhrase("a zebra", ["a", "zebra"], []),
                      ListedPhrase("The cat", ["the", "cat"], [9, 6])]
    assert "avoid list phrase 4 ('...') has no words: skipped" in caplog.text
    assert "1 phrases of the avoid list have words outside the vocabulary" in caplog.text
    with pytest.raises(ImcapError, match="avoid_list must be a list of phrases"):
        read_avoid_list(["a", 3], VOCAB)


# --- one typed check per phrase ---------------------------------------------------------------------------------

def test_a_check_is_a_frozen_record():
    check = PhraseCheck(CONSTRAINT, "a dog", ("a", "dog"), enforced=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        check.enforced = False   # type: ignore[misc]
    assert dataclasses.replace(check, enforced=False).enforced is False and check.enforced is True
    with pytest.raises(ValueError, match="kind must be one of constraint, avoid, got 'constraints'"):
        PhraseCheck("constraints", "a dog")
    assert not check.disjunctive and check.key() == (("a", "dog"),)
    either = PhraseCheck(CONSTRAINT, "kitten | cat", alternatives=("kitten", "cat"),
                         alternative_tokens=(("kitten",), ("cat",)))
    assert either.disjunctive and either.key() == (("cat",), ("kitten",))


def test_what_a_check_says_of_a_caption():
    caption = ["a", "cat", "on", "the", "grass"]
    assert PhraseCheck(CONSTRAINT, "A cat", ("a", "cat")).result(caption) == PhraseResult("A cat", ["a", "cat"], True)
    assert not PhraseCheck(CONSTRAINT, "A cat", ("a", "cat")).result(caption, times=2).met
    assert not PhraseCheck(CONSTRAINT, "...").result(caption).met                       # no words
    assert not PhraseCheck(CONSTRAINT, "cat", ("cat",), checkable=False).result(caption).met   # ignored
    assert PhraseCheck(AVOID, "dog", ("dog",)).result(caption) == PhraseResult("dog", ["dog"], True)
    assert not PhraseCheck(AVOID, "the grass", ("the", "grass")).result(caption).met
    assert not PhraseCheck(AVOID, "...").result(caption).met and not PhraseCheck(
        AVOID, "x", ("x",), checkable=False).result(caption).met
    either = PhraseCheck(CONSTRAINT, "dog | grass | cat", alternatives=("dog", "grass", "cat"),
                         alternative_tokens=(("dog",), ("grass",), ("cat",)))
    assert either.result(caption) == PhraseResult("dog | grass | cat", ["cat"], True, ["dog", "grass", "cat"])
    assert either.result(caption, times=2).met and not either.result(caption, times=3).met
    assert either.result(["a", "red", "kitten"]) == PhraseResult("dog | grass | cat", ["dog"], False,
                                                                ["dog", "grass", "cat"])
    none = PhraseCheck(CONSTRAINT, "zebra", checkable=False, alternatives=("zebra",))
    assert none.result(caption) == PhraseResult("zebra", [], False, ["zebra"])


# --- an input's phrases, ready for the search -------------------------------------------------------------------

def test_an_inputs_phrases_become_word_ids_checks_and_warnings_in_order():
    phrases = prepare_phrases(["a dog", "zebra", [" ", "cat", "kitten runs"], "...", "the grass"],
                              ["on", "zebra", "...", IgnoredPhrase("3", "avoid 3: ignored")], VOCAB, 5)
    assert phrases.required == [[4, 5], [[6], [7, 12]]]   # "the grass" does not fit: 2 + 1 + 2 words and </s> > 5
    assert phrases.avoid == [[8]]
    assert phrases.checks == [
        PhraseCheck(CONSTRAINT, "a dog", ("a", "dog"), enforced=True),
        PhraseCheck(CONSTRAINT, "zebra", ("zebra",)),
        PhraseCheck(CONSTRAINT, "  | cat | kitten runs", alternatives=(" ", "cat", "kitten runs"),
                    alternative_tokens=(("cat",), ("kitten", "runs")), enforced=True),
        PhraseCheck(CONSTRAINT, "...", ()),
        PhraseCheck(CONSTRAINT, "the grass", ("the", "grass")),
        PhraseCheck(AVOID, "on", ("on",)), PhraseCheck(AVOID, "zebra", ("zebra",)), PhraseCheck(AVOID, "...", ()),
        PhraseCheck(AVOID, "3", (), checkable=False)]
    assert phrases.warnings == [
        "constraint 'zebra' has words outside the vocabulary (zebra): it cannot be met",
        "constraint alternative ' ' has no words: ignored",
        "constraint '...' has no words: ignored",
        "constraint 'the grass' does not fit: 5 constraint words and </s> exceed max_output_length 5; not enforced",
        "avoid phrase '...' has no words: ignored",
        "avoid 3: ignored"]
    assert prepare_phrases([], [], VOCAB, 5) == InputPhrases(5)
    with pytest.raises(TypeError, match="constraints is not a list"):
        prepare_phrases("a dog", [], VOCAB, 5)   # type: ignore[arg-type]


def test_an_avoided_phrase_inside_a_constraint_is_not_avoided():
    listed = read_avoid_list(["red", "a zebra", "grass"], VOCAB)
    phrases = prepare_phrases(["a red dog", ["the cat", "kitten"]], ["the", "cat", "dog runs"], VOCAB, 10, listed)
    assert phrases.avoid == [[9], [6], [5, 12]]   # the search drops those inside a constraint itself
    assert phrases.warnings == ["avoid phrase 'the' occurs in a constraint: not avoided",
                                "avoid phrase 'cat' occurs in a constraint: not avoided",
                                "avoid list phrase 'red' occurs in a constraint: not avoided"]
    assert phrases.checks[-1] == PhraseCheck(AVOID, "red", ("red",))   # reported with the input's avoid phrases
    assert prepare_phrases([], ["red"], VOCAB, 10, listed).warnings == []


def test_constraints_fit_in_max_output_length_in_order():
    phrases = InputPhrases(5)   # 4 words and </s>
    assert phrases.fits(4, "a b c d") and phrases.warnings == []
    phrases.required.append([[4, 5, 6], [7]])   # a disjunction needs its shortest alternative: 1 word
    assert phrases.needed_words() == 1 and phrases.fits(3, "x") and not phrases.fits(4, "y")
    assert phrases.warnings == ["constraint 'y' does not fit: 5 constraint words and </s> exceed max_output_length "
                                "5; not enforced"]
    guides = [GuideWord(1, "tabby", 0.9, ["cat", "kitten"]), GuideWord(2, "dalmatian", 0.5, ["dog"])]
    phrases.add_guide(guides, [[[6], [7]], [[4, 5, 9, 10]]])
    assert phrases.required == [[[4, 5, 6], [7]], [[6], [7]]] and phrases.guides == guides[:1]
    assert phrases.warnings[-1].startswith("constraint 'guide dog' does not fit: 6 constraint words")


# --- the report of a caption ------------------------------------------------------------------------------------

def test_an_enforced_constraint_the_caption_lacks_gets_a_warning():
    phrases = InputPhrases(30, required=[[4, 5], [4, 5]], warnings=["given"],
                           checks=[PhraseCheck(CONSTRAINT, "A dog", ("a", "dog"), enforced=True),
                                   PhraseCheck(CONSTRAINT, "a dog", ("a", "dog"), enforced=True),
                                   PhraseCheck(AVOID, "cat", ("cat",))])
    required, avoided, met, warnings = phrases.report(["a", "dog", "runs"])
    assert [p.met for p in required] == [True, False] and [p.met for p in avoided] == [True] and met is False
    assert warnings == ["given", NOT_MET % "'a dog'"]   # the phrase given twice occurs once
    assert phrases.warnings == ["given"]   # a report adds its warnings to its own list only
    assert phrases.report(["a", "dog", "and", "a", "dog"]) == ([PhraseResult("A dog", ["a", "dog"], True),
                                                                PhraseResult("a dog", ["a", "dog"], True)],
                                                               [PhraseResult("cat", ["cat"], True)], True, ["given"])


def test_disjunctive_constraints_are_counted_as_often_as_given():
    def either(*alternatives):
        return PhraseCheck(CONSTRAINT, " | ".join(alternatives), alternatives=alternatives, enforced=True,
                           alternative_tokens=tuple(tuple(a.split()) for a in alternatives))
    # the same alternatives, in any order, twice: two occurrences of any of them
    phrases = InputPhrases(30, checks=[either("cat", "kitten"), either("kitten", "cat"), either("dog")])
    report = phrases.report(["a", "cat", "and", "a", "dog"])
    assert [(p.phrase, p.tokens, p.met) for p in report.constraints] == [
        ("cat | kitten", ["cat"], True), ("kitten | cat", ["cat"], False), ("dog", ["dog"], True)]
    assert report.constraints_met is False and report.warnings == [NOT_MET % "'kitten | cat'"]
    assert phrases.report(["a", "kitten", "and", "a", "cat", "dog"]).constraints_met is True
    assert phrases.report(["a", "cat", "a", "cat", "dog"]).constraints_met is True
    # a phrase and a disjunction of that phrase alone are one constraint given twice, as the search takes them
    phrases = InputPhrases(30, checks=[PhraseCheck(CONSTRAINT, "a cat", ("a", "cat"), enforced=True),
                                       either("a cat")])
    assert [p.met for p in phrases.report(["a", "cat"]).constraints] == [True, False]
    assert [p.met for p in phrases.report(["a", "cat", "a", "cat"]).constraints] == [True, True]


def test_no_phrases_no_verdict_and_guides_say_whether_they_are_met():
    guide = GuideWord(1, "tabby", 0.9, ["tabby cat", "kitten"])
    phrases = InputPhrases(30, guides=[guide])
    assert phrases.report(["a", "tabby", "cat"]) == ([], [], None, [])
    assert guide.met is True
    phrases.report(["a", "tabby"])
    assert guide.met is False
