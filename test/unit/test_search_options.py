"""SearchOptions: the one place of the search settings' defaults and checks; the library raises TypeError/ValueError
naming the field, the command lines one line naming the option."""
import argparse
import dataclasses

import numpy as np
import pytest

from imcap import arguments
from imcap.search_options import SearchOptions, search_options_from_args
from imcap.utils import ImcapError


def test_defaults_are_the_captioners_and_options_are_hashable():
    options = SearchOptions()
    assert options.to_dict() == {"beam_size": 5, "nbest_size": 1, "max_output_length": 30, "length_penalty_alpha": 1.0,
                                 "length_penalty_beta": 0.0, "no_repeat_ngram_size": 0, "allow_unk": False,
                                 "sample": False, "sampling_temperature": 1.0, "sampling_top_k": 0,
                                 "sampling_top_p": 1.0, "seed": 0, "diverse_beam_groups": 1,
                                 "diverse_beam_strength": 0.5, "guide_soft_weight": 0.0, "guide_against": 0.0}
    assert options.selection == "beam" and options.hypotheses_per_image == 5
    assert SearchOptions(beam_size=3) == SearchOptions(beam_size=3) and len({SearchOptions(), SearchOptions()}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.beam_size = 3  # type: ignore[misc]


@pytest.mark.parametrize("changes, message", [
    ({"beam_size": 0}, "beam_size must be at least 1, got 0"),
    ({"nbest_size": 6}, r"nbest_size must be between 1 and beam_size \(5\), got 6"),
    ({"max_output_length": 0}, "max_output_length must be at least 1, got 0"),
    ({"length_penalty_alpha": -0.5}, "length_penalty_alpha must be a finite number of at least 0, got -0.5"),
    ({"length_penalty_beta": float("inf")}, "length_penalty_beta must be a finite number of at least 0, got inf"),
    ({"no_repeat_ngram_size": 1}, r"no_repeat_ngram_size must be 0 \(off\) or at least 2, got 1"),
    ({"no_repeat_ngram_size": -2}, r"no_repeat_ngram_size must be 0 \(off\) or at least 2, got -2"),
    ({"sampling_temperature": 0.0}, "sampling_temperature must be a finite number above 0, got 0.0"),
    ({"sampling_temperature": -1.0}, "sampling_temperature must be a finite number above 0, got -1.0"),
    ({"sampling_temperature": float("inf")}, "sampling_temperature must be a finite number above 0, got inf"),
    ({"sampling_top_k": -1}, r"sampling_top_k must be 0 \(off\) or at least 1, got -1"),
    ({"sampling_top_p": 0.0}, r"sampling_top_p must be above 0 and at most 1 \(1: off\), got 0.0"),
    ({"sampling_top_p": 1.5}, r"sampling_top_p must be above 0 and at most 1 \(1: off\), got 1.5"),
    ({"sampling_top_p": float("nan")}, r"sampling_top_p must be above 0 and at most 1 \(1: off\), got nan"),
    ({"seed": -1}, r"seed must be between 0 and 2\*\*64 - 1, got -1"),
    ({"diverse_beam_groups": 2}, r"diverse_beam_groups must be at least 1 and divide beam_size \(5\), got 2"),
    ({"diverse_beam_groups": 0}, r"diverse_beam_groups must be at least 1 and divide beam_size \(5\), got 0"),
    ({"beam_size": 4, "diverse_beam_groups": 2, "sample": True},
     r"diverse_beam_groups must be 1 with sample \(sampling draws independent captions, it keeps no beam\), got 2"),
    ({"diverse_beam_strength": -0.5}, "diverse_beam_strength must be a finite number of at least 0, got -0.5"),
    ({"sample": True, "nbest_size": 0}, "nbest_size must be at least 1, got 0"),
    ({"guide_soft_weight": -0.5}, r"guide_soft_weight must be a finite number of at least 0 \(0: off\), got -0.5"),
    ({"guide_soft_weight": float("nan")}, r"guide_soft_weight must be a finite number of at least 0"),
    ({"guide_against": 1.5}, r"guide_against must be in \[0, 1\] \(0: off\), got 1.5"),
    ({"guide_against": -0.01}, r"guide_against must be in \[0, 1\] \(0: off\), got -0.01"),
])
def test_a_value_out_of_range_is_a_value_error_naming_the_field(changes, message):
    with pytest.raises(ValueError, match=message):
        SearchOptions(**changes)
    with pytest.raises(ValueError, match=message):
        SearchOptions().replace(**changes)


@pytest.mark.parametrize("changes, message", [
    ({"beam_size": 2.0}, "beam_size must be an integer, got 2.0"),
    ({"beam_size": True}, "beam_size must be an integer, got True"),
    ({"length_penalty_alpha": "1"}, "length_penalty_alpha must be a number, got '1'"),
    ({"allow_unk": 1}, "allow_unk must be true or false, got 1"),
    ({"sample": "yes"}, "sample must be true or false, got 'yes'"),
    ({"seed": 1.5}, "seed must be an integer, got 1.5"),
    ({"sampling_top_p": "0.9"}, "sampling_top_p must be a number, got '0.9'"),
])
def test_a_value_of_the_wrong_type_is_a_type_error_naming_the_field(changes, message):
    with pytest.raises(TypeError, match=message):
        SearchOptions(**changes)


def test_numpy_numbers_are_accepted_as_python_numbers():
    options = SearchOptions(beam_size=np.int64(3), length_penalty_alpha=np.float32(0.5))
    assert type(options.beam_size) is int and options.beam_size == 3
    assert type(options.length_penalty_alpha) is float and options.length_penalty_alpha == 0.5
    assert options == SearchOptions(beam_size=3, length_penalty_alpha=0.5)


def test_replace_refuses_unknown_names_and_of_lowers_nbest_to_the_beam():
    with pytest.raises(TypeError, match="unknown search options beam, size"):
        SearchOptions().replace(beam=3, size=2)
    assert SearchOptions.of(beam_size=3, nbest_size=5) == SearchOptions(beam_size=3, nbest_size=3)
    assert SearchOptions.of(SearchOptions(beam_size=4, nbest_size=4), beam_size=2).nbest_size == 2
    assert SearchOptions.of(SearchOptions(beam_size=4)) == SearchOptions(beam_size=4)


def test_sampling_counts_its_samples_in_nbest_size_whatever_the_beam_and_selects_as_it_says():
    sampled = SearchOptions.of(beam_size=3, nbest_size=8, sample=True)
    assert sampled.nbest_size == 8 and sampled.hypotheses_per_image == 8 and sampled.selection == "sample"
    assert SearchOptions.of(SearchOptions(sample=True), nbest_size=12).nbest_size == 12   # not lowered to the beam
    diverse = SearchOptions(beam_size=6, nbest_size=3, diverse_beam_groups=3)
    assert diverse.selection == "diverse" and diverse.hypotheses_per_image == 6
    # the sampling settings wait unused without sample (a server's defaults may hold them for requests that sample)
    assert SearchOptions(sampling_top_k=5, sampling_top_p=0.9, seed=3).selection == "beam"


def parse(argv):
    parser = argparse.ArgumentParser()
    arguments.add_search_args(parser.add_argument_group("Search"), "n-best")
    return parser.parse_args(argv)


def test_the_command_lines_take_their_defaults_from_search_options():
    assert search_options_from_args(parse([])) == SearchOptions()
    assert search_options_from_args(parse(["-b", "3", "--nbest-size", "9", "--allow-unk"])) == SearchOptions(
        beam_size=3, nbest_size=3, allow_unk=True)   # --nbest-size lowered to --beam-size, as it always was


def test_a_command_line_option_out_of_range_is_one_error_naming_the_option():
    with pytest.raises(ImcapError, match=r"^--no-repeat-ngram-size must be 0 \(off\) or at least 2, got 1$"):
        search_options_from_args(parse(["--no-repeat-ngram-size", "1"]))
    for argv, message in [
            (["--sample", "--sampling-temperature", "0"], r"^--sampling-temperature must be a finite number above 0, "
                                                          r"got 0.0$"),
            (["--sample", "--sampling-top-p", "1.5"], r"^--sampling-top-p must be above 0 and at most 1 \(1: off\), "
                                                      r"got 1.5$"),
            (["--beam-size", "6", "--diverse-beam-groups", "4"],
             r"^--diverse-beam-groups must be at least 1 and divide --beam-size \(6\), got 4$"),
            (["--beam-size", "4", "--diverse-beam-groups", "2", "--sample"],
             r"^--diverse-beam-groups must be 1 with --sample \(sampling draws independent captions, it keeps no "
             r"beam\), got 2$"),
            (["--seed", "-3"], r"^--seed must be between 0 and 2\*\*64 - 1, got -3$")]:
        with pytest.raises(ImcapError, match=message):
            search_options_from_args(parse(argv))
    guided = arguments.new_parser("test")
    arguments.add_search_args(guided, nbest_help="n-best")
    arguments.add_guide_args(guided)
    with pytest.raises(ImcapError, match=r"^--guide-soft-weight must be a finite number of at least 0 \(0: off\), "
                                         r"got -1.0$"):
        search_options_from_args(guided.parse_args(["--guide-soft-weight", "-1"]))
    assert search_options_from_args(guided.parse_args(["--guide-against", "0.01"])).guide_against == 0.01
    assert search_options_from_args(parse(["--sample", "--nbest-size", "9", "--seed", "4", "--sampling-top-k", "3"])) \
        == SearchOptions(sample=True, nbest_size=9, seed=4, sampling_top_k=3)
    assert search_options_from_args(parse(["-b", "6", "--diverse-beam-groups", "3", "--diverse-beam-strength", "1",
                                           "--nbest-size", "3"])) == SearchOptions(
        beam_size=6, nbest_size=3, diverse_beam_groups=3, diverse_beam_strength=1.0)
