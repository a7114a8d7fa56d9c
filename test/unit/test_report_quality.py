"""bench/report_quality.py: the training wall-clock read from a model dir's log, and the validation scores of the
decoding setting chosen, read from a recipe's log."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
import report_quality  # noqa: E402

RUN = """[2026-11-21:16:55:45 INFO imcap.train] imcap.train --source train.features --max-seconds 1170
[2026-11-21:16:56:04 INFO imcap.train] features: 6000 training images, loaded in 18.9 s
  a continuation line without a time
[2026-11-21:17:15:20 INFO imcap.train] training stopped after 1503 updates
"""
RESUMED = """[2026-11-21:18:00:00 INFO imcap.train] imcap.train --source train.features --max-seconds 1170
[2026-11-21:18:01:30 INFO imcap.train] training stopped after 1600 updates
"""


def test_wall_clock_counts_loading_and_sums_resumes(tmp_path):
    log = tmp_path / "log"
    log.write_text(RUN)
    assert report_quality.training_wall_seconds(str(log)) == 19 * 60 + 35
    # the pause between the two runs is not counted
    log.write_text(RUN + RESUMED)
    assert report_quality.training_wall_seconds(str(log)) == 19 * 60 + 35 + 90


def test_log_without_times_is_an_error(tmp_path):
    log = tmp_path / "log"
    log.write_text("no times here\n")
    with pytest.raises(ValueError, match="no timed log line"):
        report_quality.training_wall_seconds(str(log))


def test_validation_scores_of_the_chosen_setting():
    log = ("params.best beam 3 alpha 0.5: val BLEU-4 19.80, CIDEr-D 0.498 (20 s)\n"
           "best on validation (by CIDEr-D): BLEU-4 19.95, CIDEr-D 0.521 with --checkpoints params.avg --beam-size 5\n")
    assert report_quality.chosen_on_validation(log) == (19.95, 0.521)
    bleu, cider = report_quality.chosen_on_validation("best on validation: BLEU-4 20.06 with --checkpoints params.avg")
    assert bleu == 20.06 and cider != cider   # logs before CIDEr-D was printed: NaN
    bleu, cider = report_quality.chosen_on_validation("the run stopped before the choice")
    assert bleu != bleu and cider != cider


def test_configuration_names_the_ensemble_with_the_cross_entropy_model():
    from imcap.encoder import EncoderConfig
    from imcap.model import ModelConfig
    config = ModelConfig(vocab_size=100, encoder=EncoderConfig(num_regions=49, feature_dim=1280, num_hidden=64),
                         feature_extraction={"encoder": "efficientnet_lite0", "input_size": [224, 224]})
    figures = {"self-critical minutes": 19.4}
    plain = report_quality.describe_configuration(config, figures, augmentations="hflip")
    assert plain.startswith("cross-entropy, then 19.4 min of self-critical training (CIDEr-D); features: "
                            "efficientnet_lite0 224x224 (49 x 1280), trained with the hflip views too; decoder rnn: ")
    assert "ensemble" not in plain
    ensemble = report_quality.describe_configuration(config, figures, augmentations="hflip", ensemble_xent=True)
    assert ("; each self-critical model decoded with the cross-entropy model it started from, as one ensemble (no more "
            "training); ") in ensemble
    assert report_quality.describe_configuration(config, {"self-critical minutes": 0.0}, models=3).startswith(
        "ensemble of 3 models trained one after the other; features: ")
