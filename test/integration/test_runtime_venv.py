"""imcap without MXNet: the venv that ``scripts/install.sh`` makes beside the framework's (``.venv-runtime``, or
``$IMCAP_RUNTIME_PYTHON``: imcap with its "runtime" and "serve" extras, no MXNet, no GluonNLP, the newest numpy)
captions images and cached features with an exported model, constraints and the guide included, as the MXNet
captioner does, and serves the page and the JSON API (a real browser uploads a test image; a bad upload gets a
JSON 400)."""
import json
import os
import subprocess

import httpx
import pytest

from test.common import IMAGES, requires_shared
from test.integration.conftest import REPO, read_lines, run_cli
from test.integration.test_onnx_export import _same_json, exported  # noqa: F401  (the exported model fixture)
from test.integration.test_serve_page import CHROMIUM, CHROMIUM_ARGS, running_server, upload_and_read_caption

RUNTIME_PYTHON = os.environ.get("IMCAP_RUNTIME_PYTHON") or os.path.join(REPO, ".venv-runtime", "bin", "python")

pytestmark = [requires_shared,
              pytest.mark.skipif(not os.access(RUNTIME_PYTHON, os.X_OK),
                                 reason="no runtime venv at %s: bash scripts/install.sh makes it" % RUNTIME_PYTHON)]


def run_runtime(module, *args, input=None):
    """``python -m imcap.MODULE ARGS`` in the runtime venv, checked to exit 0: its STDOUT as text."""
    return run_cli(module, *args, input=input, python=RUNTIME_PYTHON).stdout.decode("utf-8")


def test_the_runtime_venv_has_no_mxnet_and_the_newest_numpy():
    code = ("import importlib.util as u, numpy, onnxruntime\n"
            "print(bool(u.find_spec('mxnet')), bool(u.find_spec('gluonnlp')), numpy.__version__)\n")
    proc = subprocess.run([RUNTIME_PYTHON, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    has_mxnet, has_gluonnlp, numpy_version = proc.stdout.split()
    assert (has_mxnet, has_gluonnlp) == ("False", "False")
    assert int(numpy_version.split(".")[0]) >= 2, numpy_version   # not mxnet's numpy 1.23.5
    for tool, module in (("train", "gluonnlp"), ("export", "onnx"), ("captioner", "mxnet")):
        stderr = run_cli(tool, "--models", REPO, "--output", "x", expect=1, timeout=60,
                         python=RUNTIME_PYTHON).stderr.decode("utf-8")
        assert len(stderr.strip().splitlines()) == 1, (tool, stderr)
        assert stderr.startswith("Error: this needs %s, which this Python (%s) does not have" % (
            module, RUNTIME_PYTHON)), stderr


def test_the_runtime_venv_captions_images_and_features_as_mxnet(model, exported, small_data):  # noqa: F811
    """From images (the exported CNN), with constraints, an avoided phrase and the guide, as JSON with attention;
    and from cached features, plain text."""
    names = small_data.raw.images["test"]
    lines = "".join(json.dumps({"image": name, "constraints": [["dog", "dogs"]] if i % 2 else [],
                                "avoid": ["grass"] if i % 3 == 0 else []}) + "\n" for i, name in enumerate(names))
    args = ["--extract-image-features", "--source-root", IMAGES, "--json-input", "--output-type", "json",
            "--guide-with-classifier", "--guide-top-k", "1", "--guide-min-probability", "0.0", "--quiet"]
    found = run_runtime("captioner", "--backend", "onnxruntime", "--models", exported, *args, input=lines)
    expected = run_cli("captioner", "--models", model.dir, *args, input=lines).stdout.decode("utf-8")
    _same_json(found, expected)
    assert len(found.splitlines()) == len(names)
    features = "".join(line + "\n" for line in read_lines(os.path.join(small_data.data, "test.features")))
    found = run_runtime("captioner", "--backend", "onnxruntime", "--models", exported, "--source-root",
                        small_data.cache, "--quiet", input=features)
    expected = run_cli("captioner", "--models", model.dir, "--source-root", small_data.cache, "--quiet",
                       input=features).stdout.decode("utf-8")
    assert found == expected and found.strip()


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="no browser at %s (.ci/run installs Debian's chromium)"
                                                         % CHROMIUM)
def test_the_runtime_venv_serves_the_page_and_the_api(model, exported, small_data, tmp_path):  # noqa: F811
    from playwright.sync_api import sync_playwright
    image = os.path.join(IMAGES, small_data.raw.images["test"][0])
    expected = run_cli("captioner", "--models", model.dir, "--extract-image-features", "--quiet",
                       input=image + "\n").stdout.decode("utf-8").strip()
    with running_server(exported, tmp_path, "--backend", "onnxruntime", python=RUNTIME_PYTHON) as server:
        info = httpx.get(server + "/v1/model", timeout=30).json()
        assert info["backend"] == "onnxruntime" and info["image_encoder"]["encoder"] == "efficientnet_lite0"
        assert info["attention_grid"] == [7, 7] and info["models"][0]["config"]["vocab_size"] > 4
        with open(image, "rb") as f:
            assert httpx.post(server + "/v1/caption", content=f.read(), timeout=60).json()["caption"] == expected
        bad = httpx.post(server + "/v1/caption", files={"image": ("x.jpg", b"not an image", "image/jpeg")},
                         timeout=60)
        assert bad.status_code == 400 and "error" in bad.json()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                assert upload_and_read_caption(page, server, image) == expected
                page.locator("#attention img").wait_for(state="visible", timeout=30000)
                page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            finally:
                browser.close()
