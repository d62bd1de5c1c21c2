#!/usr/bin/env bash
# The test command: from nothing but Python, create .venv, install the pinned requirements and the
# package (editable, for its console scripts), generate the tiny stand-in model into .cache/,
# run ruff and mypy, then pytest (extra arguments go to pytest: ./run_tests.sh -m "not slow").
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$VENV"
fi
pip_install() { "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@"; }
pip_install -r requirements.txt -r requirements-dev.txt
# pipecat-ai (a client the conformance tests drive) declares plain onnxruntime, which must never sit
# beside onnxruntime-gpu: it is installed without its dependencies (requirements-dev.txt lists the rest)
pip_install --no-deps -r tests/clients/requirements-nodeps.txt
pip_install --no-deps --no-build-isolation -e . 2>/dev/null || pip_install --no-deps -e .
export TTS_TEST_MODEL_DIR=${TTS_TEST_MODEL_DIR:-.cache/stand-in/tiny}
"$VENV/bin/python" -m chatterbox_server.model.stand_in "$TTS_TEST_MODEL_DIR" --profile tiny
echo "ruff check, ruff format --check, mypy"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
"$VENV/bin/mypy"
exec "$VENV/bin/python" -m pytest "$@"
