"""scripts/select_decoding.py on the pipeline's tiny model and the real val images of the subset: every setting is
scored with BLEU-4 and CIDEr-D, and the choice follows --metric."""
import os
import re
import subprocess
import sys

from test.integration.conftest import NUM_REFERENCES, REPO, cli_env

SCRIPT = os.path.join(REPO, "scripts", "select_decoding.py")
SETTING = re.compile(r"^(params\.\w+) beam (\d+) alpha ([0-9.]+): val BLEU-4 ([0-9.]+), CIDEr-D ([0-9.]+) \(")


def select(model, small_data, *extra, expect=0):
    data = small_data.data
    proc = subprocess.run([sys.executable, SCRIPT, "--model", model.dir, "--source", os.path.join(data, "val.features"),
                           "--source-root", small_data.cache, "--references"]
                          + [os.path.join(data, "val.captions.%d" % k) for k in range(NUM_REFERENCES)]
                          + [str(a) for a in extra], cwd=REPO, env=cli_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == expect, proc.stderr[-3000:]
    return proc


def test_choice_follows_the_metric(model, small_data, tmp_path):
    for metric, column in (("bleu", 3), ("cider", 4)):
        output = tmp_path / ("%s.options" % metric)
        proc = select(model, small_data, "--checkpoints", "params.best", "params.00001", "--beam-sizes", 1, 3,
                      "--alphas", 0.0, 1.0, "--metric", metric, "--output", output)
        lines = proc.stdout.splitlines()
        settings = [SETTING.match(line).groups() for line in lines[:-1]]
        assert len(settings) == 2 * 3   # per checkpoint: beam 1 once, beam 3 with two alphas
        best = max(settings, key=lambda s: float(s[column]))   # the first of the best, as the script keeps it
        expected = "--checkpoints %s --beam-size %s --length-penalty-alpha %s" % best[:3]
        assert lines[-1].startswith("best on validation (by %s): BLEU-4 %s, CIDEr-D %s with %s" % (
            "BLEU-4" if metric == "bleu" else "CIDEr-D", best[3], best[4], expected))
        assert output.read_text() == expected + "\n"


def test_missing_checkpoints_are_one_clear_error(model, small_data):
    proc = select(model, small_data, "--checkpoints", "params.nowhere", expect=1)
    assert "params.nowhere: missing, skipped" in proc.stdout
    assert proc.stderr.strip().splitlines()[-1] == "select_decoding: none of the checkpoints params.nowhere is in every " \
                                                    "model dir"
