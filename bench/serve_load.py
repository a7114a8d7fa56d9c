#!/usr/bin/env python3
"""Serving under load: ``python -m imcap.serve`` on loopback with 1, 4, 16 and 64 concurrent clients, each level for a
bounded time: requests/s, p50 and p99 latency, failures, the mean batch of the server's searches; and, as the
reference in the same run, the captioner CLI's batched images/s on the same images (its loop, ``Captioner.caption``
from the image files after a warm-up batch: beam 5, the same model, ``--batch-size`` as the server's
``--max-batch-size``).

    .venv/bin/python bench/serve_load.py --model runs/flickr8k-full/model

Each client is a thread with one keep-alive connection that posts an image (the raw body), waits for its caption
and posts the next, round robin over the first ``--images`` Flickr8k test images (held in memory). The CLI's loop
runs first, then the server alone (a subprocess on 127.0.0.1, stopped by its process id at the end). Prints one figure
per line and appends a row to docs/benchmarks.md. Run it alone on the machine. Targets: no failures, 16 clients at
least 0.7x the CLI's images/s, p99 under 2 s at 4 clients.
"""
import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List, Tuple

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from imcap.paths import DEFAULT_FLICKR8K  # noqa: E402
from imcap.utils import stop_process  # noqa: E402
from benchlib import append_row  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START_SECONDS = 300


def cli_images_per_second(model: str, paths: List[str], beam: int, batch: int) -> float:
    """Images/s of the captioner CLI's loop (:meth:`imcap.inference.Captioner.caption` with
    ``extract_image_features``, from the image files) on ``paths``, after a warm-up batch that builds the graphs."""
    from imcap.inference import CaptionInput, Captioner
    captioner = Captioner([model], beam_size=beam, batch_size=batch, extract_image_features=True)
    inputs = [CaptionInput(path=path) for path in paths]
    captioner.caption(inputs[:batch])  # warm-up: the CNN's and the decoder's graphs
    start = time.time()
    results = captioner.caption(inputs)
    elapsed = time.time() - start
    failed = [r for r in results if r.error is not None]
    if failed:
        sys.exit("serve_load: %s: %s" % (paths[failed[0].line - 1], failed[0].error))
    return len(inputs) / elapsed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(port: int, path: str) -> Dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def start_server(model: str, port: int, extra: List[str], log_path: str, python: str = sys.executable
                 ) -> subprocess.Popen:
    """``python -m imcap.serve`` (with the interpreter ``python``) on 127.0.0.1:``port``, answering ``/v1/health``
    (or exit with its log)."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([python, "-m", "imcap.serve", "--models", model, "--host", "127.0.0.1",
                                 "--port", str(port), "--quiet"] + extra, cwd=REPO, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log)
    deadline = time.time() + START_SECONDS
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit("serve_load: the server exited:\n%s" % open(log_path).read()[-3000:])
        try:
            if get_json(port, "/v1/health").get("status") == "ok":
                return proc
        except (OSError, ValueError, http.client.HTTPException):
            pass
        time.sleep(0.5)
    stop_process(proc)
    sys.exit("serve_load: no answer from the server in %d s:\n%s" % (START_SECONDS, open(log_path).read()[-3000:]))


def run_level(port: int, images: List[bytes], clients: int, seconds: float, query: str) -> Dict[str, float]:
    """``clients`` threads posting images for ``seconds``: requests/s, p50/p99 latency (ms), failures. Counted are
    the requests answered within the ``seconds`` (those still open then are finished, and neither counted nor
    failed), so a long latency does not stretch the window with a tail of fewer clients."""
    latencies: List[List[float]] = [[] for _ in range(clients)]
    failures = [0] * clients
    errors: List[str] = []
    window: List[float] = []  # when the clients start: all together, once all are ready
    start_barrier = threading.Barrier(clients + 1, action=lambda: window.append(time.monotonic()))
    path = "/v1/caption" + ("?" + query if query else "")

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        start_barrier.wait()
        deadline = window[0] + seconds
        i = k
        while time.monotonic() < deadline:
            data = images[i % len(images)]
            i += clients
            t0 = time.monotonic()
            try:
                conn.request("POST", path, body=data, headers={"Content-Type": "application/octet-stream"})
                response = conn.getresponse()
                body = response.read()
                t1 = time.monotonic()
                if response.status == 200 and b'"caption"' in body:
                    if t1 <= deadline:
                        latencies[k].append(t1 - t0)
                    continue
                failures[k] += 1
                if len(errors) < 5:
                    errors.append("%d %s" % (response.status, body[:200]))
            except (OSError, http.client.HTTPException) as e:
                failures[k] += 1
                if len(errors) < 5:
                    errors.append(repr(e))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.close()

    before = get_json(port, "/v1/health")["batching"]
    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    start_barrier.wait()
    for t in threads:
        t.join(seconds + 120)
    after = get_json(port, "/v1/health")["batching"]
    done = sorted(x for per_client in latencies for x in per_client)
    searches = after["searches"] - before["searches"]
    for error in errors:
        print("  failure: %s" % error)
    return {"requests_per_second": len(done) / seconds, "requests": len(done), "failures": sum(failures),
            "p50_ms": 1000 * float(np.percentile(done, 50)) if done else float("nan"),
            "p99_ms": 1000 * float(np.percentile(done, 99)) if done else float("nan"),
            "mean_batch": (after["images"] - before["images"]) / searches if searches else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--image-root", default=os.path.join(DEFAULT_FLICKR8K, "images"))
    parser.add_argument("--image-list", default=os.path.join(DEFAULT_FLICKR8K, "test.txt"),
                        help="Image file names, one a line, under --image-root (default: the Flickr8k test split).")
    parser.add_argument("--images", type=int, default=200, help="Images used (the first lines of --image-list).")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--seconds", type=float, default=30.0, help="Duration of each client level.")
    parser.add_argument("--warmup-seconds", type=float, default=5.0, help="Load before the first level (not counted).")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--max-batch-size", type=int, default=32, help="The server's, and the CLI's --batch-size.")
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--query", default="", help="Query string of every request, e.g. attention=false. "
                                                    "Default: the server's defaults (attention included).")
    parser.add_argument("--server-args", nargs=argparse.REMAINDER, default=[],
                        help="Further options of imcap.serve (last on the line).")
    parser.add_argument("--benchmarks", default="docs/benchmarks.md")
    args = parser.parse_args()
    with open(args.image_list, encoding="utf-8") as f:
        names = [line.strip() for line in f if line.strip()][:args.images]
    paths = [os.path.join(args.image_root, name) for name in names]
    images = []
    for path in paths:
        with open(path, "rb") as f:
            images.append(f.read())

    cli = cli_images_per_second(args.model, paths, args.beam_size, args.max_batch_size)
    print("CLI, beam %d, batch %d, from images: %.1f images/s" % (args.beam_size, args.max_batch_size, cli))

    port = free_port()
    log_fd, log_path = tempfile.mkstemp(prefix="serve_load.", suffix=".log")
    os.close(log_fd)
    server = start_server(args.model, port, ["--beam-size", str(args.beam_size), "--max-batch-size",
                                             str(args.max_batch_size), "--max-wait-ms", str(args.max_wait_ms)]
                          + args.server_args, log_path)
    levels: List[Tuple[int, Dict[str, float]]] = []
    try:
        if args.warmup_seconds > 0:
            # builds the graphs of the batch sizes to come (the largest level's, up to the server's largest batch)
            run_level(port, images, min(max(args.clients), args.max_batch_size), args.warmup_seconds, args.query)
        for clients in args.clients:
            figures = run_level(port, images, clients, args.seconds, args.query)
            levels.append((clients, figures))
            print("%d clients: %.1f requests/s, p50 %.0f ms, p99 %.0f ms, %d failures, mean batch %.1f, %.2fx CLI"
                  % (clients, figures["requests_per_second"], figures["p50_ms"], figures["p99_ms"],
                     figures["failures"], figures["mean_batch"], figures["requests_per_second"] / cli))
    finally:
        stop_process(server)
    if os.path.exists(log_path):
        os.remove(log_path)
    failures = sum(int(f["failures"]) for _, f in levels)
    print("failures: %d" % failures)
    by_clients = dict(levels)
    if 16 in by_clients:
        print("16 clients / CLI: %.2f (target >= 0.7)" % (by_clients[16]["requests_per_second"] / cli))
    if 4 in by_clients:
        print("p99 at 4 clients: %.0f ms (target < 2000)" % by_clients[4]["p99_ms"])
    command = "bench/serve_load.py --model %s --images %d --seconds %g --max-batch-size %d --max-wait-ms %g%s" % (
        args.model, args.images, args.seconds, args.max_batch_size, args.max_wait_ms,
        " --query %s" % args.query if args.query else "")
    columns = ["CLI images/s (beam %d, from images)" % args.beam_size]
    values = ["%.1f" % cli]
    for clients, figures in levels:
        columns.append("%d clients: req/s, p50/p99 ms, mean batch" % clients)
        values.append("%.1f, %.0f/%.0f, %.1f" % (figures["requests_per_second"], figures["p50_ms"], figures["p99_ms"],
                                                 figures["mean_batch"]))
    columns += ["failures", "16 clients / CLI"]
    values += [str(failures), "%.2f" % (by_clients[16]["requests_per_second"] / cli) if 16 in by_clients else "-"]
    append_row(args.benchmarks, "Serving under load (bench/serve_load.py)", columns, command, values)


if __name__ == "__main__":
    main()
