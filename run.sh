#!/usr/bin/env bash
# Serve the API: creates .venv and installs requirements on first use (or when they change),
# then runs server.py with every argument passed through, e.g. ./run.sh --stand-in --port 8001.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$VENV"
fi
stamp="$VENV/.requirements.sha256"
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.txt
  echo "$want" > "$stamp"
fi
exec "$VENV/bin/python" server.py "$@"
