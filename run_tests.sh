#!/usr/bin/env bash
# The test command: from nothing but Python, create .venv, install everything, generate the
# tiny stand-in model into .cache/, and run pytest (extra arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
export TTS_TEST_MODEL_DIR=${TTS_TEST_MODEL_DIR:-.cache/stand-in/tiny}
"$VENV/bin/python" tools/make_stand_in_model.py "$TTS_TEST_MODEL_DIR" --profile tiny
exec "$VENV/bin/python" -m pytest "$@"
