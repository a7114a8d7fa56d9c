"""The JSON API of imcap.serve on the tiny model of the pipeline (``model`` in conftest.py): its captions are the
captioner CLI's for the same images and options, every bad request gets its status and a JSON error and the next
good request works, and requests that arrive together are captioned in one batched search."""
import io
import json
import os
import socket
import tempfile
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from imcap import arguments, serve
from test.common import IMAGES, requires_shared
from test.integration.conftest import read_lines, run_cli

pytestmark = requires_shared

UPLOAD_MB = 2            # a small upload limit, to test it without large bodies
MAX_PIXELS = 4_000_000


def serve_args(model_dir, *extra):
    parser = arguments.new_parser("test")
    serve.add_serve_args(parser)
    return parser.parse_args(["--models", model_dir, "--no-page", "--max-upload-mb", str(UPLOAD_MB),
                              "--max-image-pixels", str(MAX_PIXELS), "--quiet"] + [str(a) for a in extra])


@pytest.fixture(scope="module")
def test_images(small_data):
    return [os.path.join(IMAGES, image) for image in read_lines(os.path.join(small_data.data, "test.images"))[:3]]


@pytest.fixture(scope="module")
def api(model):
    app, service = serve.build_app(serve_args(model.dir, "--max-wait-ms", "0"))
    with TestClient(app) as client:
        yield client
    service.close()


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def cli_json(model_dir, paths, *options):
    proc = run_cli("captioner", "--models", model_dir, "--extract-image-features", "--output-type", "json",
                   "--quiet", *options, input="".join(p + "\n" for p in paths))
    return [json.loads(line) for line in proc.stdout.decode("utf-8").splitlines()]


def test_captions_are_the_clis(api, model, test_images):
    expected = cli_json(model.dir, test_images, "--beam-size", "3", "--nbest-size", "3")
    defaults = cli_json(model.dir, test_images)
    for path, cli, cli_default in zip(test_images, expected, defaults):
        # multipart with JSON options
        got = api.post("/v1/caption", files={"image": (os.path.basename(path), read_bytes(path), "image/jpeg")},
                       data={"options": json.dumps({"beam_size": 3, "nbest_size": 3})})
        assert got.status_code == 200, got.text
        body = got.json()
        assert body["caption"] == cli["caption"] and body["tokens"] == cli["tokens"]
        assert body["score"] == pytest.approx(cli["score"], abs=1e-4)
        assert [n["caption"] for n in body["nbest"]] == [n["caption"] for n in cli["nbest"]]
        assert [n["score"] for n in body["nbest"]] == pytest.approx([n["score"] for n in cli["nbest"]], abs=1e-4)
        assert len(body["attention"]) == len(body["tokens"]) + 1 and len(body["attention"][0]) == 49
        np.testing.assert_allclose(np.array(body["attention"]), np.array(cli["attention"]), atol=1e-4)
        assert body["attention_grid"] == [7, 7] and body["options"]["beam_size"] == 3
        assert body["image"]["format"] == "JPEG" and body["constraints_met"] is None and body["constraints"] == []
        # the raw body with query options, and the server's defaults (the CLI's)
        raw = api.post("/v1/caption?beam_size=3&nbest_size=3&attention=false", content=read_bytes(path),
                       headers={"content-type": "image/jpeg"}).json()
        assert raw["caption"] == cli["caption"] and raw["attention"] is None
        default = api.post("/v1/caption", content=read_bytes(path)).json()
        assert default["caption"] == cli_default["caption"]
        assert default["score"] == pytest.approx(cli_default["score"], abs=1e-4)
        assert [n["caption"] for n in default["nbest"]] == [cli_default["caption"]]


def contains(tokens, words):
    return any(tokens[i:i + len(words)] == words for i in range(len(tokens) - len(words) + 1))


def png_bytes(image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_every_bad_request_gets_its_status_and_the_next_good_one_works(api, test_images):
    good = read_bytes(test_images[0])
    expected = api.post("/v1/caption", content=good).json()["caption"]
    oversized = os.urandom(int(UPLOAD_MB * 2 ** 20) + 1000)
    bad = [
        (413, dict(content=oversized), "more than the limit"),
        (413, dict(files={"image": ("big.jpg", oversized, "image/jpeg")}), "more than the limit"),
        (413, dict(content=png_bytes(Image.new("1", (3000, 2000)))), "more than the limit of 4000000"),
        (413, dict(content=png_bytes(Image.new("1", (20000, 20000)))), "pixels"),
        (400, dict(content=b"hello, not an image"), "not an image file"),
        (400, dict(content=b""), "empty upload"),
        (400, dict(content=good[:len(good) // 3]), "not a readable image"),
        (400, dict(content=b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"), "not an image file"),
        (400, dict(content=test_images[0].encode()), "not an image file"),       # a path is not an image
        (400, dict(files={"options": (None, "{}")}), "no field 'image'"),
        (400, dict(content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data; boundary=x"}),
         "multipart"),
        (422, dict(params={"path": test_images[0]}, content=good), "unknown option 'path'"),
        (422, dict(params={"beam": "3"}, content=good), "unknown option 'beam'"),
        (422, dict(params={"beam_size": "x"}, content=good), "not an integer"),
        (422, dict(params={"beam_size": "1000"}, content=good), "beam_size must be between 1 and 20"),
        (422, dict(params={"beam_size": "2", "nbest_size": "3"}, content=good), "nbest_size must be between"),
        (422, dict(files={"image": ("a.jpg", good, "image/jpeg"), "options": (None, '{"image": "/etc/passwd"}')}),
         "unknown option 'image'"),
        (422, dict(files={"image": ("a.jpg", good, "image/jpeg"), "file": (None, test_images[0])}),
         "unknown multipart field 'file'"),
        (422, dict(files={"image": ("a.jpg", good, "image/jpeg"), "options": (None, "{not json")}), "not JSON"),
        (422, dict(params={"guide_soft_weight": "-1"}, content=good), "guide_soft_weight must be a finite number"),
        (422, dict(params={"guide_against": "2"}, content=good), "guide_against must be in [0, 1]"),
        (422, dict(params={"guide_soft_weight": "1"}, content=good), "need a server started with "
                                                                      "--guide-with-classifier"),
    ]
    for status, request, message in bad:
        response = api.post("/v1/caption", **request)
        assert response.status_code == status, (request.get("params"), response.text)
        assert message in response.json()["error"], response.json()
        after = api.post("/v1/caption", content=good)
        assert after.status_code == 200 and after.json()["caption"] == expected
    # constraints and avoided phrases are passed through to the search, which meets them
    plain_tokens = api.post("/v1/caption", content=good).json()["tokens"]
    avoided = [token for token in plain_tokens if token not in ("a", "dog")]
    assert avoided, plain_tokens   # a word of the plain caption to avoid, so that the search must change it
    constrained = api.post("/v1/caption", params=[("constraints", "a dog"), ("avoid", avoided[0])], content=good)
    assert constrained.status_code == 200, constrained.text
    body = constrained.json()
    assert body["constraints"] == [{"phrase": "a dog", "met": True}]
    assert body["avoid"] == [{"phrase": avoided[0], "met": True}]
    assert contains(body["tokens"], ["a", "dog"]) and avoided[0] not in body["tokens"]
    assert body["constraints_met"] is True and body["warnings"] == []
    assert body["tokens"] != plain_tokens   # the plain caption does not meet them: the search was constrained
    assert api.get("/v1/caption").status_code == 405 and "error" in api.get("/v1/caption").json()
    assert api.get("/v1/health").json()["status"] == "ok"


def test_several_captions_per_image_sampled_or_by_diverse_beam_search(api, model, test_images):
    good = read_bytes(test_images[0])
    for params, message in [({"sample": "true", "sampling_temperature": "0"},
                              "sampling_temperature must be a finite number above 0, got 0.0"),
                             ({"sample": "true", "sampling_temperature": "warm"}, "sampling_temperature: not a number"),
                             ({"sample": "true", "sampling_top_p": "1.5"},
                              "sampling_top_p must be above 0 and at most 1"),
                             ({"beam_size": "5", "diverse_beam_groups": "2"},
                              "diverse_beam_groups must be at least 1 and divide beam_size (5), got 2"),
                             ({"sample": "true", "nbest_size": "21"}, "nbest_size must be between 1 and 20, got 21"),
                             ({"sample": "true", "constraints": "a dog"},
                              "constraints need beam search: not with sample")]:
        response = api.post("/v1/caption", params=params, content=good)
        assert response.status_code == 422 and message in response.json()["error"], response.text
    sampled = api.post("/v1/caption", params={"sample": "true", "nbest_size": "4", "seed": "5"}, content=good)
    assert sampled.status_code == 200, sampled.text
    captions = [n["caption"] for n in sampled.json()["nbest"]]
    assert len(set(captions)) == 4 and sampled.json()["caption"] == captions[0]
    assert sampled.json()["options"]["sample"] is True and sampled.json()["options"]["seed"] == 5
    as_json = api.post("/v1/caption", files={"image": ("a.jpg", good, "image/jpeg")},
                       data={"options": json.dumps({"sample": True, "nbest_size": 4, "seed": 5})}).json()
    assert [n["caption"] for n in as_json["nbest"]] == captions          # the same seed, the same captions
    cli = cli_json(model.dir, test_images[:1], "--sample", "--nbest-size", "4", "--seed", "5")[0]
    assert [n["caption"] for n in cli["nbest"]] == captions               # a request is line 1 of its own input
    diverse = api.post("/v1/caption", params={"beam_size": "4", "diverse_beam_groups": "2", "nbest_size": "2",
                                              "diverse_beam_strength": "2"}, content=good)
    assert diverse.status_code == 200 and len(diverse.json()["nbest"]) == 2


def test_nothing_is_written_to_disk(api, tmp_path, monkeypatch):
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))  # where a spooled upload would roll over to
    noise = np.random.RandomState(0).randint(0, 255, (720, 720, 3), dtype=np.uint8)
    big = png_bytes(Image.fromarray(noise))
    assert 2 ** 20 < len(big) < UPLOAD_MB * 2 ** 20  # more than a spooled file keeps in memory
    for request in (dict(files={"image": ("big.png", big, "image/png")}), dict(content=big)):
        response = api.post("/v1/caption", **request)
        assert response.status_code == 200, response.text
        assert response.json()["image"] == {"format": "PNG", "width": 720, "height": 720}
    assert list(temp.iterdir()) == []


def test_health_and_model(api, model):
    health = api.get("/v1/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert {"searches", "images", "queued", "max_batch_size"} <= set(health.json()["batching"])
    info = api.get("/v1/model").json()
    assert info["vocabulary_size"] == len(json.load(open(os.path.join(model.dir, "vocab.trg.json")))["idx_to_token"])
    assert info["models"][0]["checkpoint"] == "params.best" and info["models"][0]["dir"] == "model"
    assert info["models"][0]["config"]["decoder_name"] == "rnn" and info["feature_shape"] == [49, 1280]
    assert info["defaults"]["beam_size"] == 5 and info["limits"]["max_upload_bytes"] == int(UPLOAD_MB * 2 ** 20)
    assert info["image_encoder"]["encoder"] == "efficientnet_lite0"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_concurrent_requests_are_batched(model, test_images):
    import uvicorn
    app, service = serve.build_app(serve_args(model.dir, "--max-wait-ms", "500", "--max-batch-size", "16"))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = "http://127.0.0.1:%d" % port
    images = [read_bytes(path) for path in test_images] * 3   # 9 requests
    try:
        deadline = time.time() + 30
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        assert server.started
        singles = {}
        with httpx.Client(timeout=60) as client:
            for path, data in zip(test_images, images):
                singles[path] = client.post(url + "/v1/caption", content=data).json()["caption"]
        searches_before = service.stats.searches
        responses = [None] * len(images)

        def post(i):
            with httpx.Client(timeout=60) as client:
                responses[i] = client.post(url + "/v1/caption", content=images[i])

        threads = [threading.Thread(target=post, args=(i,)) for i in range(len(images))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert all(r is not None and r.status_code == 200 for r in responses)
        searches = service.stats.searches - searches_before
        assert searches < len(images), "%d requests took %d searches" % (len(images), searches)
        assert max(r.json()["batch_size"] for r in responses) > 1
        # batched, each image still gets its own caption
        assert [r.json()["caption"] for r in responses] == [singles[p] for p in test_images] * 3
        # sampled: a request's samples depend on its seed alone, not on the requests it is batched with
        sample = {"sample": "true", "nbest_size": "2", "seed": "3"}
        with httpx.Client(timeout=60) as client:
            alone = [client.post(url + "/v1/caption", params=sample, content=data).json()["nbest"]
                     for data in images[:3]]
        sampled = [None] * len(images)

        def post_sampled(i):
            with httpx.Client(timeout=60) as client:
                sampled[i] = client.post(url + "/v1/caption", params=sample, content=images[i])

        threads = [threading.Thread(target=post_sampled, args=(i,)) for i in range(len(images))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert all(r is not None and r.status_code == 200 for r in sampled)
        assert max(r.json()["batch_size"] for r in sampled) > 1
        assert [[n["caption"] for n in r.json()["nbest"]] for r in sampled] == \
            [[n["caption"] for n in nbest] for nbest in alone] * 3
    finally:
        server.should_exit = True
        thread.join(30)
        service.close()
