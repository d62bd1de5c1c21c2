#!/usr/bin/env bash
# Benchmark in one command: ./run_benchmark.sh [--stand-in] [voice.wav]
# Uses the server at $BENCH_URL (default http://localhost:8000), starting one with ./run.sh (and
# stopping it on exit) if none answers. Registers voice.wav, or uses the first registered voice,
# or a generated reference clip; sweeps concurrency, then searches the max under RTF 1.
# Knobs: BENCH_CONCURRENCY (1,2,4,6,8,10,12,16), BENCH_REQUESTS (20), BENCH_MAX_BOUND (64),
# BENCH_OUTPUT (benchmark_results.json), BENCH_EXTRA_ARGS (passed to benchmark.py).
set -euo pipefail
cd "$(dirname "$0")"
URL=${BENCH_URL:-http://localhost:8000}
CONCURRENCY=${BENCH_CONCURRENCY:-1,2,4,6,8,10,12,16}
REQUESTS=${BENCH_REQUESTS:-20}
MAX_BOUND=${BENCH_MAX_BOUND:-64}
OUTPUT=${BENCH_OUTPUT:-benchmark_results.json}
SERVER_ARGS=()
VOICE=""
for arg in "$@"; do
  case "$arg" in
    --stand-in) SERVER_ARGS+=(--stand-in) ;;
    *) VOICE="$arg" ;;
  esac
done

healthy() { curl -fsS -o /dev/null "$URL/health" 2>/dev/null; }

SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
}
trap cleanup EXIT

if ! healthy; then
  port=$(echo "$URL" | sed -E 's#^[a-z]+://[^:/]+:?([0-9]*).*#\1#')
  host=$(echo "$URL" | sed -E 's#^[a-z]+://([^:/]+).*#\1#')
  echo "no server at $URL: starting ./run.sh ${SERVER_ARGS[*]:-}" >&2
  ./run.sh --host "$host" --port "${port:-8000}" "${SERVER_ARGS[@]}" >benchmark_server.log 2>&1 &
  SERVER_PID=$!
fi
for _ in $(seq 1 600); do
  healthy && break
  if [ -n "$SERVER_PID" ] && ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "the server exited; see benchmark_server.log" >&2; exit 1
  fi
  sleep 1
done
healthy || { echo "server at $URL did not become healthy" >&2; exit 1; }

PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
if [ -n "$VOICE" ]; then
  VOICE_ID=$("$PY" benchmark.py --server-url "$URL" --register-voice "$VOICE")
else
  VOICE_ID=$(curl -fsS "$URL/voices" | "$PY" -c 'import json,sys; v=json.load(sys.stdin)["voices"]; print(v[0]["voice_id"] if v else "")')
  if [ -z "$VOICE_ID" ]; then
    clip=$(mktemp --suffix=.wav)
    "$PY" -c 'import sys, numpy as np, soundfile as sf
t = np.arange(10 * 24000) / 24000
f = 140 * (1 + 0.05 * np.sin(2 * np.pi * 4 * t))
x = 0.3 * np.sin(2 * np.pi * np.cumsum(f) / 24000) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t) ** 2)
sf.write(sys.argv[1], x.astype("float32"), 24000)' "$clip"
    echo "no voice registered: using a generated reference clip" >&2
    VOICE_ID=$("$PY" benchmark.py --server-url "$URL" --register-voice "$clip")
    rm -f "$clip"
  fi
fi
echo "voice: $VOICE_ID" >&2

# shellcheck disable=SC2086
"$PY" benchmark.py --server-url "$URL" --voice-id "$VOICE_ID" --concurrency "$CONCURRENCY" \
  --requests "$REQUESTS" --find-max-concurrency --max-concurrency-bound "$MAX_BOUND" \
  --output "$OUTPUT" ${BENCH_EXTRA_ARGS:-}
echo "wrote $OUTPUT" >&2
echo "--- final /metrics ---"
curl -fsS "$URL/metrics"
