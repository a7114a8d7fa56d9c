#!/usr/bin/env bash
# Creates .venv (or $IMCAP_VENV) and installs imcap with its pinned stack. Idempotent.
#
# gluonnlp 0.10.0 is only published as a source archive whose pre-generated Cython file does not compile on
# Python >= 3.11 (it includes longintrepr.h); it is rebuilt here from its .pyx with Cython < 3.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${IMCAP_VENV:-.venv}
PYTHON=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/pip --disable-pip-version-check -q"
$PIP install --upgrade pip wheel "setuptools<81" "cython<3"
$PIP install "numpy==1.23.5" "mxnet==1.9.1"
if ! "$VENV/bin/python" -c "import gluonnlp" 2>/dev/null; then
  tmp=$(mktemp -d)
  $PIP download --no-deps --no-binary :all: -d "$tmp" "gluonnlp==0.10.0"
  tar -xzf "$tmp"/gluonnlp-0.10.0.tar.gz -C "$tmp"
  rm -f "$tmp"/gluonnlp-0.10.0/src/gluonnlp/data/fast_bert_tokenizer.c
  $PIP install --no-build-isolation --no-deps "$tmp"/gluonnlp-0.10.0
  rm -rf "$tmp"
fi
$PIP install -e ".[test]"
"$VENV/bin/python" -c "import imcap, mxnet, gluonnlp; print('imcap', imcap.__version__, '| mxnet', mxnet.__version__, '| gluonnlp', gluonnlp.__version__)"
