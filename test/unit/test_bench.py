"""bench/: the steady-state extraction rate counts images (not the class-probability and augmented-view files cached
beside their features), and no benchmark row is written when a figure is above its own ceiling."""
import argparse
import math
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
import benchlib  # noqa: E402
import peer_sockeye  # noqa: E402

from imcap.features import classes_path, feature_relpath, view_path  # noqa: E402


def fake_cache(root, images: int, start: float = 1_000_000.0) -> None:
    """A feature cache of ``images`` images, image ``i``'s features written at ``start + i`` seconds, its mirrored
    view's and class probabilities' a little later, half of the images in a sub-folder, and a manifest."""
    for i in range(images):
        relpath = feature_relpath(("sub/" if i % 2 else "") + "%04d.jpg" % i)
        features = os.path.join(str(root), relpath)
        os.makedirs(os.path.dirname(features), exist_ok=True)
        for delay, path in ((0.0, features), (0.3, view_path(features, "hflip")), (0.6, classes_path(features))):
            with open(path, "wb") as f:
                f.write(b"\x93NUMPY")
            os.utime(path, (start + i + delay, start + i + delay))
    (root / "cache.json").write_text("{}")


def test_steady_rate_counts_one_file_per_image(tmp_path):
    fake_cache(tmp_path, 10)
    assert len([f for _, _, files in os.walk(tmp_path) for f in files if f.endswith(".npy")]) == 30
    # 8 images after the 2nd, written 1 s apart: 1 image/s (counting every .npy file gave 28 over 9.3 s, 3/s)
    assert peer_sockeye.steady_rate(str(tmp_path), 2) == pytest.approx(1.0)


def test_steady_rate_of_features_alone(tmp_path):
    for i in range(5):   # as Sockeye's extractor writes them: one .npy per image, nothing beside
        path = tmp_path / ("%d.jpg.npy" % i)
        path.write_bytes(b"")
        os.utime(path, (100.0 + 0.5 * i, 100.0 + 0.5 * i))
    assert peer_sockeye.steady_rate(str(tmp_path), 1) == pytest.approx(4 / 2.0)


def test_steady_rate_needs_more_images_than_it_leaves_out(tmp_path):
    fake_cache(tmp_path, 3)
    with pytest.raises(SystemExit, match="features of 3 images, too few to leave out the first 3"):
        peer_sockeye.steady_rate(str(tmp_path), 3)


@pytest.mark.parametrize("name, expected", [("a.jpg.npy", True), ("a.npy", True), ("dir.x.png.npy", True),
                                            ("a.jpg.classes.npy", False), ("a.jpg.hflip.npy", False),
                                            ("cache.json", False), ("all.features", False)])
def test_is_image_features(name, expected):
    assert peer_sockeye.is_image_features(name) is expected


ROW = dict(section="S", columns=["figure"], command="bench/x.py", values=["1.0"])


def test_a_figure_above_its_ceiling_writes_no_row(tmp_path):
    path = str(tmp_path / "benchmarks.md")
    with pytest.raises(benchlib.CeilingExceeded, match=r"exceeds its own ceiling.*steady / bare forward = 1\.89"):
        benchlib.append_row(path, ceiling_ratios={"steady / bare forward": 138.1 / 73.0, "step": 0.5}, **ROW)
    assert not os.path.exists(path)
    with pytest.raises(SystemExit):   # a benchmark stops with the message, as on its other errors
        benchlib.check_ceilings({"x": math.nan})


def test_figures_within_the_tolerance_write_the_row(tmp_path):
    path = str(tmp_path / "benchmarks.md")
    assert benchlib.CEILING_TOLERANCE == 1.05
    benchlib.append_row(path, ceiling_ratios={"a": 0.9, "b": benchlib.CEILING_TOLERANCE}, **ROW)
    benchlib.append_row(path, **ROW)  # no ceiling at all
    assert open(path).read().count("| `bench/x.py` |") == 2
    with pytest.raises(benchlib.CeilingExceeded):
        benchlib.check_ceilings({"a": 1.04}, tolerance=1.0)


def peer_figures(imcap_steady: float, bare_forward: float):
    """The figures bench/peer_sockeye.py's row reads, made up."""
    figures = {"sockeye training samples/s (median)": 100.0, "imcap training samples/s (median)": 150.0,
               "training ratio imcap/Sockeye (target 2)": 1.5,
               "imcap bare forward+backward+update samples/s (ceiling)": 160.0,
               "extraction ratio imcap/Sockeye (steady state; target 1.2)": 1.0,
               "sockeye extraction images/s (steady state)": 50.0, "imcap extraction images/s (steady state)":
               imcap_steady, "imcap bare fused CNN forward images/s (ceiling)": bare_forward}
    for beam in ("1", "5"):
        figures.update({"sockeye captioning images/s beam %s" % beam: 10.0,
                        "imcap captioning images/s beam %s" % beam: 20.0,
                        "captioning ratio imcap/Sockeye beam %s" % beam: 2.0})
    for part in ("training", "extraction", "captioning"):
        for tool in ("sockeye", "imcap"):
            figures["%s %s peak RSS MB beam 5" % (tool, part) if part == "captioning"
                    else "%s %s peak RSS MB" % (tool, part)] = 1000.0
    return figures


def peer_bench(tmp_path, figures):
    bench = peer_sockeye.Bench.__new__(peer_sockeye.Bench)   # no peer, no venv: only the row
    bench.args = argparse.Namespace(extract_images=1024, updates=300, only=["extraction", "training", "captioning"],
                                    benchmarks=str(tmp_path / "benchmarks.md"))
    bench.figures = figures
    return bench


def test_peer_sockeye_refuses_a_steady_rate_above_the_bare_forward(tmp_path):
    bench = peer_bench(tmp_path, peer_figures(imcap_steady=138.1, bare_forward=73.0))
    with pytest.raises(benchlib.CeilingExceeded, match=r"imcap extraction images/s \(steady = 1\.89"):
        bench.row()
    assert not os.path.exists(bench.args.benchmarks)
    bench = peer_bench(tmp_path, peer_figures(imcap_steady=69.1, bare_forward=73.0))
    bench.row()
    assert "69.1" in open(bench.args.benchmarks).read()
