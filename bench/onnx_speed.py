#!/usr/bin/env python3
"""ONNX Runtime against MXNet in one run: captioning images/s of both backends (``Captioner(backend=...)``, the
captioner CLI's loop) from cached features and from images, at beam 1 and 5, batch 1 and 32; the image encoder
alone (MXNet's oneDNN-fused EfficientNet against the exported graph); the server's requests/s at 16 clients; the peak
resident memory of each. The MXNet figures run in this venv, the ONNX Runtime ones in the MXNet-free runtime venv
(``--runtime-python``, default ``.venv-runtime/bin/python``, made by scripts/install.sh), each measurement in a
process of its own (so its peak memory is its own).

    .venv/bin/python bench/onnx_speed.py --model runs/g/model --checkpoint params.avg \
        --source runs/q/data/test.features --source-root runs/features-efficientnet_lite0

The model dir is exported first (``python -m imcap.export``, into ``--exported``, default a temporary dir). Prints one
figure per line and appends a row to docs/benchmarks.md. Run it alone on the machine. Targets (the ONNX issue): ONNX
Runtime at least 1.5x MXNet's images/s at beam 5, batch 32, from cached features; its encoder at least 0.9x MXNet's
fused one.
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Tuple

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
sys.path.insert(0, REPO)
sys.path.insert(0, BENCH)

BACKENDS = ("mxnet", "onnxruntime")


def _inputs(args) -> list:
    from imcap.inference import CaptionInput
    from imcap.utils import read_lines
    lines = [line.strip() for line in read_lines(args.source)][:args.images]
    if args.kind != "features":   # images: the feature file names are the image names with .npy appended
        return [CaptionInput(path=os.path.join(args.image_root, line[:-len(".npy")]), line=n)
                for n, line in enumerate(lines, 1)]
    return [CaptionInput(path=line, line=n) for n, line in enumerate(lines, 1)]


def probe(args) -> Dict[str, float]:
    """One measurement in this process: images/s of the captioner (``kind`` features or images) or of the image
    encoder alone (``kind`` encoder, on decoded images), after a warm-up batch."""
    import imcap  # noqa: F401  (OMP_NUM_THREADS)
    from imcap.inference import Captioner
    onnx = args.backend == "onnxruntime"
    captioner = Captioner(args.models, None if onnx else args.checkpoint, backend=args.backend,
                          beam_size=args.beam_size, batch_size=args.batch_size, source_root=args.source_root,
                          extract_image_features=args.kind != "features")
    inputs = _inputs(args)
    if args.kind == "encoder":
        from imcap.vision.images import load_image
        encoder = captioner.get_image_encoder()
        import numpy as np
        images = np.stack([load_image(i.path, encoder.input_size) for i in inputs[:args.batch_size]])
        encoder.encode(images)   # warm-up
        start, done = time.time(), 0
        while done < args.images:
            encoder.encode(images)
            done += len(images)
    else:
        captioner.caption(inputs[:args.batch_size])   # warm-up: the graphs
        start, done = time.time(), len(inputs)
        failed = [r for r in captioner.caption(inputs) if r.error]
        if failed:
            sys.exit("onnx_speed: line %d: %s" % (failed[0].line, failed[0].error))
    speed = done / (time.time() - start)
    loaded = "mxnet" in sys.modules
    assert loaded != onnx, "the %s backend %s MXNet" % (args.backend, "loaded" if loaded else "did not load")
    return {"images_per_second": speed, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}


def run_probe(python: str, backend: str, models: str, args, kind: str, beam: int, batch: int, images: int
              ) -> Dict[str, float]:
    """:func:`probe` in a new process of ``python``."""
    command = [python, os.path.abspath(__file__), "probe", "--backend", backend, "--models", models,
               "--checkpoint", args.checkpoint, "--source", args.source, "--source-root", args.source_root,
               "--image-root", args.image_root, "--kind", kind, "--beam-size", str(beam), "--batch-size", str(batch),
               "--images", str(images)]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit("onnx_speed: %s probe (%s, beam %d, batch %d) failed:\n%s" % (backend, kind, beam, batch,
                                                                                 proc.stderr[-3000:]))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def server_figures(python: str, backend: str, models: str, checkpoint: str, image_paths: List[str], seconds: float
                   ) -> Tuple[float, float]:
    """Requests/s of ``imcap.serve`` (beam 5, batches of up to 32) at 16 clients posting images for ``seconds``, and
    the server's peak resident memory (MB)."""
    from serve_load import free_port, run_level, start_server
    from imcap.utils import stop_process
    images = []
    for path in image_paths:
        with open(path, "rb") as f:
            images.append(f.read())
    port = free_port()
    log_fd, log_path = tempfile.mkstemp(prefix="onnx_speed.", suffix=".log")
    os.close(log_fd)
    extra = ["--backend", backend, "--beam-size", "5", "--max-batch-size", "32", "--no-page"]
    if backend == "mxnet":
        extra += ["--checkpoints", checkpoint]
    server = start_server(models, port, extra, log_path, python=python)
    try:
        run_level(port, images, 16, 5.0, "")   # warm-up: the graphs of the batch sizes to come
        figures = run_level(port, images, 16, seconds, "")
        with open("/proc/%d/status" % server.pid, encoding="utf-8") as f:
            peak = [int(line.split()[1]) / 1024.0 for line in f if line.startswith("VmHWM")][0]
    finally:
        stop_process(server)
        os.remove(log_path)
    if figures["failures"]:
        sys.exit("onnx_speed: %d failed requests on %s" % (figures["failures"], backend))
    return figures["requests_per_second"], peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", default="run", choices=["run", "probe"],
                        help="run: the whole benchmark; probe: one measurement (what run starts).")
    parser.add_argument("--model", help="The model dir (run).")
    parser.add_argument("--models", help="probe: the model dir or exported dir.")
    parser.add_argument("--backend", choices=BACKENDS, default="mxnet", help="probe: the backend.")
    parser.add_argument("--checkpoint", default="params.best")
    parser.add_argument("--exported", default=None, help="Where the export goes (default: a temporary dir).")
    parser.add_argument("--source", required=True, help="The test split's .features list.")
    parser.add_argument("--source-root", required=True, help="The feature cache.")
    parser.add_argument("--image-root", default=None, help="The images (default: Flickr8k's in ../shared).")
    parser.add_argument("--images", type=int, default=1000, help="Lines of --source (batch 32).")
    parser.add_argument("--images-unbatched", type=int, default=100, help="Lines of --source at batch 1.")
    parser.add_argument("--kind", choices=["features", "images", "encoder"], default="features", help="probe.")
    parser.add_argument("--beam-size", type=int, default=5, help="probe.")
    parser.add_argument("--batch-size", type=int, default=32, help="probe.")
    parser.add_argument("--server-seconds", type=float, default=20.0)
    parser.add_argument("--runtime-python", default=os.path.join(REPO, ".venv-runtime", "bin", "python"))
    parser.add_argument("--benchmarks", default="docs/benchmarks.md")
    args = parser.parse_args()
    if args.image_root is None:
        from imcap.paths import DEFAULT_FLICKR8K
        args.image_root = os.path.join(DEFAULT_FLICKR8K, "images")
    if args.mode == "probe":
        print(json.dumps(probe(args)))
        return
    if not args.model:
        parser.error("--model is required")
    if not os.access(args.runtime_python, os.X_OK):
        sys.exit("onnx_speed: no runtime venv at %s (bash scripts/install.sh makes it)" % args.runtime_python)
    exported = args.exported or os.path.join(tempfile.mkdtemp(prefix="onnx_speed."), "exported")
    subprocess.run([sys.executable, "-m", "imcap.export", "--models", args.model, "--output", exported,
                    "--checkpoint", args.checkpoint, "--force", "--quiet"], cwd=REPO, check=True)
    pythons = {"mxnet": (sys.executable, args.model), "onnxruntime": (args.runtime_python, exported)}
    results: Dict[Tuple[str, int, int, str], Dict[str, float]] = {}
    for kind in ("features", "images"):
        for beam in (1, 5):
            for batch in (32, 1):
                for backend in BACKENDS:
                    python, models = pythons[backend]
                    count = args.images if batch > 1 else args.images_unbatched
                    result = run_probe(python, backend, models, args, kind, beam, batch, count)
                    results[(kind, beam, batch, backend)] = result
                    print("%s, beam %d, batch %d, %s: %.1f images/s, peak %.0f MB" % (
                        kind, beam, batch, backend, result["images_per_second"], result["peak_rss_mb"]))
    encoder = {}
    for backend in BACKENDS:
        python, models = pythons[backend]
        encoder[backend] = run_probe(python, backend, models, args, "encoder", 1, 32, 320)
        print("image encoder alone, batch 32, %s: %.1f images/s, peak %.0f MB" % (
            backend, encoder[backend]["images_per_second"], encoder[backend]["peak_rss_mb"]))
    with open(args.source, encoding="utf-8") as f:
        paths = [os.path.join(args.image_root, line.strip()[:-len(".npy")]) for line in f][:200]
    server = {backend: server_figures(pythons[backend][0], backend, pythons[backend][1], args.checkpoint, paths,
                                      args.server_seconds) for backend in BACKENDS}
    for backend, (rps, peak) in server.items():
        print("server, 16 clients, %s: %.1f requests/s, peak %.0f MB" % (backend, rps, peak))
    if not args.exported:
        shutil.rmtree(os.path.dirname(exported), ignore_errors=True)
    ratio = lambda key: results[key + ("onnxruntime",)]["images_per_second"] / \
        results[key + ("mxnet",)]["images_per_second"]  # noqa: E731
    features_ratio = ratio(("features", 5, 32))
    encoder_ratio = encoder["onnxruntime"]["images_per_second"] / encoder["mxnet"]["images_per_second"]
    server_ratio = server["onnxruntime"][0] / server["mxnet"][0]
    print("onnxruntime / mxnet, features, beam 5, batch 32: %.2f (target >= 1.5)" % features_ratio)
    print("onnxruntime / mxnet, image encoder: %.2f (target >= 0.9)" % encoder_ratio)
    print("onnxruntime / mxnet, server at 16 clients: %.2f" % server_ratio)
    from benchlib import append_row
    columns, values = [], []
    for kind in ("features", "images"):
        for beam in (1, 5):
            for batch in (32, 1):
                columns.append("%s, beam %d, batch %d: images/s MXNet / ORT (ratio)" % (kind, beam, batch))
                values.append("%.1f / %.1f (%.2f)" % (results[(kind, beam, batch, "mxnet")]["images_per_second"],
                                                      results[(kind, beam, batch, "onnxruntime")]["images_per_second"],
                                                      ratio((kind, beam, batch))))
    columns += ["encoder alone, batch 32: images/s MXNet fused / ORT (ratio)", "server, 16 clients: req/s MXNet / ORT",
                "peak MB MXNet / ORT: features b5 b32, images b5 b32, server"]
    values += ["%.1f / %.1f (%.2f)" % (encoder["mxnet"]["images_per_second"],
                                       encoder["onnxruntime"]["images_per_second"], encoder_ratio),
               "%.1f / %.1f (%.2f)" % (server["mxnet"][0], server["onnxruntime"][0], server_ratio),
               "%.0f / %.0f, %.0f / %.0f, %.0f / %.0f" % (
                   results[("features", 5, 32, "mxnet")]["peak_rss_mb"],
                   results[("features", 5, 32, "onnxruntime")]["peak_rss_mb"],
                   results[("images", 5, 32, "mxnet")]["peak_rss_mb"],
                   results[("images", 5, 32, "onnxruntime")]["peak_rss_mb"], server["mxnet"][1],
                   server["onnxruntime"][1])]
    command = "bench/onnx_speed.py --model %s --checkpoint %s --source %s --source-root %s --images %d" % (
        args.model, args.checkpoint, args.source, args.source_root, args.images)
    append_row(args.benchmarks, "ONNX Runtime against MXNet (bench/onnx_speed.py)", columns, command, values)


if __name__ == "__main__":
    main()
