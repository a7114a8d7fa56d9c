"""The web page of imcap.serve in a real browser: Debian's chromium, driven by Playwright (never ``playwright
install``: the browser is /usr/bin/chromium), uploads a Flickr8k test image on the page of a server started as a
subprocess on 127.0.0.1, and reads back the caption the JSON API gives for the same file; the page loads nothing
from outside the server."""
import contextlib
import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from imcap.utils import stop_process
from test.common import CHECK_IMAGES, IMAGES, requires_shared
from test.integration.conftest import REPO, cli_command, cli_env, read_lines

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
START_SECONDS = 180
# the page of a guided server: soft guidance and guidance against, no hard constraint (captions as the API's)
GUIDE = ["--guide-with-classifier", "--guide-top-k", "0", "--guide-soft-weight", "1.5", "--guide-against", "0.01"]

pytestmark = [requires_shared,
              pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                 reason="no browser at %s: install Debian's chromium (apt-get install -y "
                                        "--no-install-recommends chromium), as .ci/run does" % CHROMIUM)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(model_dir, log_folder, *extra, python=sys.executable):
    """``python -m imcap.serve --models MODEL_DIR EXTRA`` on a free loopback port (its URL), stopped by its process
    id; ``python``: the interpreter (default: this one)."""
    log_path = str(log_folder / "server.log")
    port = free_port()
    url = "http://127.0.0.1:%d" % port
    command = cli_command("serve", ["--models", model_dir, "--host", "127.0.0.1", "--port", port, *extra], python)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, cwd=REPO, env=cli_env(), stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        deadline = time.time() + START_SECONDS
        while True:
            assert proc.poll() is None, "imcap.serve exited with %s:\n%s" % (proc.returncode, open(log_path).read())
            try:
                if httpx.get(url + "/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.time() < deadline, "imcap.serve did not answer in %d s:\n%s" % (START_SECONDS,
                                                                                         open(log_path).read())
            time.sleep(0.5)
        yield url
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def server(model, tmp_path_factory):
    """The server of the tiny model, guided (:data:`GUIDE`)."""
    with running_server(model.dir, tmp_path_factory.mktemp("serve"), *GUIDE) as url:
        yield url


def upload_and_read_caption(page, server, image):
    """Open the page, upload ``image`` and wait for its caption; the caption."""
    page.goto(server + "/", wait_until="networkidle", timeout=60000)
    page.locator("#image input[type=file]").set_input_files(image)
    page.wait_for_function("() => { const t = document.querySelector('#caption textarea');"
                           " return t && t.value.length > 0; }", timeout=60000)
    return page.locator("#caption textarea").input_value()


def test_the_page_captions_an_upload_as_the_api_does(server, small_data, tmp_path):
    from playwright.sync_api import sync_playwright
    image = os.path.join(IMAGES, read_lines(os.path.join(small_data.data, "test.images"))[0])
    with open(image, "rb") as f:
        expected = httpx.post(server + "/v1/caption", content=f.read(), timeout=60).json()
    assert expected["caption"]
    outside = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("request", lambda request: outside.append(request.url)
                    if not request.url.startswith((server, "data:", "blob:")) else None)
            assert upload_and_read_caption(page, server, image) == expected["caption"]
            assert expected["caption"] in page.locator("#nbest").inner_text()
            figure = page.locator("#attention img")
            figure.wait_for(state="visible", timeout=30000)
            assert figure.evaluate("img => img.naturalWidth") > 500  # the panels of the image and each word
            status = page.locator("#status").inner_text()
            assert "searched with" in status
            pushed = [w for w in expected["guide_pushed"] if w["bonus"] >= 0.01]
            assert pushed and "pushed by the classifier: %s (+%.2f)" % (pushed[0]["word"], pushed[0]["bonus"]) in status
            assert ("held back (the classifier rules them out): " in status) == bool(expected["guide_held_back"])
            assert page.locator("#guide_soft_weight input[type=number]").input_value() == "1.5"
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
            # an example (the first: the astronaut of ../shared/data/imagenet-check) is captioned as its file
            with open(os.path.join(CHECK_IMAGES, "astronaut.jpg"), "rb") as f:
                example = httpx.post(server + "/v1/caption", content=f.read(), timeout=60).json()["caption"]
            page.locator("#examples button.gallery-item").first.click()
            page.wait_for_function("(caption) => document.querySelector('#caption textarea').value === caption",
                                   arg=example, timeout=60000)
        finally:
            browser.close()
    assert outside == [], "the page requested %s" % outside
    # Gradio's file route serves its cache and the examples, no other file of the server
    not_an_example = os.path.join(IMAGES, read_lines(os.path.join(small_data.data, "train.images"))[0])
    for path in (os.path.join(REPO, "setup.py"), "/etc/passwd", not_an_example):
        assert httpx.get(server + "/gradio_api/file=" + path, timeout=10).status_code == 403, path


def gradio_event(server, fn_index, data):
    """Call an event of the page the way its JavaScript does (Gradio's queue: join, then read the event stream)."""
    session = "test-%d-%d" % (fn_index, time.time_ns())
    joined = httpx.post(server + "/gradio_api/queue/join", timeout=30,
                        json={"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None,
                              "trigger_id": None})
    assert joined.status_code == 200, joined.text
    with httpx.stream("GET", server + "/gradio_api/queue/data", params={"session_hash": session}, timeout=60) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[len("data:"):])
                if message.get("msg") == "process_completed":
                    return message.get("output", {})
    raise AssertionError("no answer from the page's event %d" % fn_index)


def test_the_page_takes_no_file_of_the_server(server, small_data):
    config = httpx.get(server + "/config", timeout=30).json()
    events = [i for i, dependency in enumerate(config["dependencies"]) if len(dependency.get("inputs", [])) == 7]
    assert events  # the caption events: image, beam size, n-best, include, avoid, the guide's two settings
    train_image = os.path.join(IMAGES, read_lines(os.path.join(small_data.data, "train.images"))[0])
    for path in ("/etc/passwd", os.path.join(REPO, "setup.py"), train_image):
        output = gradio_event(server, events[0], [{"path": path, "meta": {"_type": "gradio.FileData"}}, 5, 3, "", "",
                                                  1.5, 0.01])
        assert "not uploaded" in output.get("error", ""), output
        assert "data" not in output
    assert httpx.get(server + "/v1/health", timeout=10).json()["status"] == "ok"
