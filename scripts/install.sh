#!/usr/bin/env bash
# Creates .venv (or $IMCAP_VENV) and installs imcap with its pinned stack (the MXNet framework, the server, ONNX
# export and ONNX Runtime, the test tools), then .venv-runtime (or $IMCAP_RUNTIME_VENV): imcap without MXNet, GluonNLP
# or the numpy pin, for captioning and serving exported models on ONNX Runtime (RUNTIME_PYTHON: its Python, any
# version onnxruntime has wheels for; IMCAP_RUNTIME_VENV=none skips it). Idempotent.
#
# Everything comes as a wheel except gluonnlp 0.10.0, which is only published as a source archive whose
# pre-generated Cython file does not compile on Python >= 3.11 (it includes longintrepr.h): that one package is
# fetched as source and rebuilt from its .pyx with Cython < 3 (a wheel), so a fresh install is bounded by downloads.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${IMCAP_VENV:-.venv}
PYTHON=${PYTHON:-python3}
start=$(date +%s)
step() { echo "install.sh [$(( $(date +%s) - start )) s] $*"; }
# numpy 1.23.5 and mxnet 1.9.1 publish wheels for CPython 3.8 to 3.11 only: refuse any other before creating anything
version=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo "none")
case "$version" in
  3.8|3.9|3.10|3.11) ;;
  none) echo "install.sh: $PYTHON: no such Python; imcap's pinned stack (numpy 1.23.5, mxnet 1.9.1) needs Python 3.8" \
          "to 3.11: run PYTHON=/path/to/python3.11 bash scripts/install.sh" >&2
     exit 1 ;;
  *) echo "install.sh: $PYTHON is Python $version; imcap's pinned stack (numpy 1.23.5, mxnet 1.9.1) needs Python" \
          "3.8 to 3.11: run PYTHON=/path/to/python3.11 bash scripts/install.sh" >&2
     exit 1 ;;
esac
if [ ! -x "$VENV/bin/python" ]; then
  step "creating the virtual environment $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/pip --disable-pip-version-check -q"
step "installing pip, wheel, setuptools<81, cython<3 (build tools, as wheels)"
$PIP install --upgrade pip wheel "setuptools<81" "cython<3"
step "installing numpy 1.23.5 and mxnet 1.9.1"
$PIP install "numpy==1.23.5" "mxnet==1.9.1"
if ! "$VENV/bin/python" -c "import gluonnlp" 2>/dev/null; then
  step "building gluonnlp 0.10.0 from its source archive (Cython extension regenerated)"
  tmp=$(mktemp -d)
  $PIP download --no-deps --no-binary gluonnlp -d "$tmp" "gluonnlp==0.10.0"
  tar -xzf "$tmp"/gluonnlp-0.10.0.tar.gz -C "$tmp"
  rm -f "$tmp"/gluonnlp-0.10.0/src/gluonnlp/data/fast_bert_tokenizer.c
  $PIP install --no-build-isolation --no-deps "$tmp"/gluonnlp-0.10.0
  rm -rf "$tmp"
fi
step "installing imcap and its other requirements (editable, with the test tools, the server's Gradio stack and ONNX Runtime)"
$PIP install -e ".[mxnet,test,serve,onnx]"
"$VENV/bin/python" -c "import imcap, mxnet, gluonnlp, numpy, gradio, onnx, onnxruntime; print('imcap', imcap.__version__, '| mxnet', mxnet.__version__, '| gluonnlp', gluonnlp.__version__, '| numpy', numpy.__version__, '| gradio', gradio.__version__, '| onnx', onnx.__version__, '| onnxruntime', onnxruntime.__version__)"
RUNTIME_VENV=${IMCAP_RUNTIME_VENV:-.venv-runtime}
if [ "$RUNTIME_VENV" != none ]; then
  if [ ! -x "$RUNTIME_VENV/bin/python" ]; then
    step "creating the virtual environment $RUNTIME_VENV (no MXNet)"
    "${RUNTIME_PYTHON:-$PYTHON}" -m venv "$RUNTIME_VENV"
  fi
  RPIP="$RUNTIME_VENV/bin/pip --disable-pip-version-check -q"
  step "installing imcap into $RUNTIME_VENV for ONNX Runtime (editable; its server stack; the newest numpy)"
  $RPIP install --upgrade pip
  $RPIP install -e ".[runtime,serve]"
  "$RUNTIME_VENV/bin/python" -c "import importlib.util as u, imcap, numpy, onnxruntime; assert not u.find_spec('mxnet'); print('imcap', imcap.__version__, 'without mxnet | numpy', numpy.__version__, '| onnxruntime', onnxruntime.__version__)"
fi
step "done"
