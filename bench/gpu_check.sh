#!/usr/bin/env bash
# The GPU check, in one command, on a machine with CUDA and onnxruntime-gpu (the CUDA image, or a
# venv with requirements + onnxruntime-gpu in place of onnxruntime):
#
#   bench/gpu_check.sh [OUT_DIR]          # default OUT_DIR: ${OUT:-.cache/gpu-check}
#
# 1. builds the full faithful stand-in in fp16 (GPT-2-medium LM, S3Gen + HiFT decoder),
# 2. LM ms per step at batch 1/8/32/64 (bench.batch_steps),
# 3. decoder ms per call at batch 1/4/16 for (prompt 250, window 53) (bench.decoder_cost),
# 4. a server sweep of 1/8/32/64 concurrent streamed requests (bench.batching, design `after`):
#    audio seconds per wall second, first audio p50/p95, RTF p95, LM and decoder shares,
# and writes each as JSON plus gpu_check.json (all of them) into OUT_DIR. Sized to finish in under
# 8 minutes on an H100/H200-class GPU; GPU_CHECK_CONCURRENCY and GPU_CHECK_REQUESTS shrink it.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-.cache/gpu-check}}
PY=${PYTHON:-.venv/bin/python}
MODEL=${GPU_CHECK_MODEL_DIR:-.cache/stand-in/faithful-fp16}
CONCURRENCY=${GPU_CHECK_CONCURRENCY:-1,8,32,64}
REQUESTS=${GPU_CHECK_REQUESTS:-1}
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1

"$PY" - <<'EOF'
import sys
from chatterbox_server.model.sessions import cuda_is_usable
import onnxruntime as ort
print("onnxruntime", ort.__version__, ort.get_available_providers())
if not cuda_is_usable():
    sys.exit("gpu_check: the CUDA provider does not start here (install onnxruntime-gpu and its CUDA/cuDNN libraries)")
EOF

started=$(date +%s)
stamp() { echo "[gpu_check +$(( $(date +%s) - started ))s] $*" >&2; }

if [ ! -f "$MODEL/onnx/language_model_fp16.onnx" ]; then
  stamp "building the faithful stand-in (fp16) in $MODEL"
  "$PY" -m chatterbox_server.model.stand_in "$MODEL" --profile faithful --dtypes fp16
fi

stamp "LM step times"
"$PY" -m bench.batch_steps --model-dir "$MODEL" --device cuda --dtype fp16 --batch 1,8,32,64 --steps 16 \
  --json "$OUT_DIR/lm_steps.json" | tee "$OUT_DIR/lm_steps.txt"

stamp "decoder call times"
"$PY" -m bench.decoder_cost --model-dir "$MODEL" --device cuda --dtype fp16 --threads 0 --shapes 250x53 \
  --batch 1,4,16 --runs 5 --json "$OUT_DIR/decoder.json" | tee "$OUT_DIR/decoder.txt"

stamp "server sweep at $CONCURRENCY streams"
"$PY" -m bench.batching --model-dir "$MODEL" --dtype fp16 --designs after --concurrency "$CONCURRENCY" \
  --requests-per-client "$REQUESTS" --work-dir "$OUT_DIR/work" --json "$OUT_DIR/sweep.json" | tee "$OUT_DIR/sweep.txt"

"$PY" - "$OUT_DIR" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
combined = {name: json.loads((out / f"{name}.json").read_text()) for name in ("lm_steps", "decoder", "sweep")}
(out / "gpu_check.json").write_text(json.dumps(combined, indent=2))
print(f"wrote {out / 'gpu_check.json'}")
EOF
stamp "done"
