"""What one conditional_decoder call costs, by prompt length, window length and batch.

Times the model directory's decoder graph alone (the faithful stand-in's is S3Gen + HiFT with the
real layer structure) and compares the single-thread figures with the table in
../shared/s3gen-decoder.md (measured on the real architecture with random weights), next to the
FLOPs that table's formulas give for each shape:

    python -m bench.decoder_cost --model-dir .cache/stand-in/faithful --threads 1      # the note's table
    python -m bench.decoder_cost --threads 2 --shapes 250x15,250x53,250x103 --batch 1,2,4
    python -m bench.decoder_cost --device cuda --dtype fp16 --batch 1,4,16 --shapes 250x53
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from chatterbox_server.model.files import DTYPE_SUFFIXES
from chatterbox_server.model.sessions import SessionSettings, providers_for

NOTE_CPU_S = {  # single-core CPU seconds per call in the shared note: (low, high)
    (250, 15): (2.9, 4.3),
    (250, 53): (3.9, 4.4),
    (100, 53): (2.0, 2.4),
    (250, 103): (5.7, 6.3),
}


def note_gflop(prompt: int, new: int) -> float:
    """The note's cost model: flow 0.64 GFLOP·L + 1.0 MFLOP·L², HiFT 1.22 GFLOP per new token."""
    length = prompt + new
    return 0.64 * length + 1.0e-3 * length**2 + 1.22 * new


def feeds_for(prompt: int, new: int, batch: int, types: dict[str, type], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    embedding = rng.standard_normal((batch, 192))
    return {
        "speech_tokens": rng.integers(0, 6561, (batch, prompt + new)).astype(types["speech_tokens"]),
        "speaker_embeddings": (embedding / np.linalg.norm(embedding, axis=1, keepdims=True)).astype(
            types["speaker_embeddings"]
        ),
        "speaker_features": rng.standard_normal((batch, 2 * prompt, 80)).astype(types["speaker_features"]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=Path(".cache/stand-in/faithful"))
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (0: ONNX Runtime's default)")
    parser.add_argument("--shapes", default="250x15,250x53,100x53,250x103", help="PROMPTxNEW tokens, comma-separated")
    parser.add_argument("--batch", default="1")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from chatterbox_server.model.contract import numpy_type

    path = args.model_dir / "onnx" / f"conditional_decoder{DTYPE_SUFFIXES[args.dtype]}.onnx"
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(str(path), options, providers=providers_for(SessionSettings(device=args.device)))
    types = {i.name: numpy_type(i.type, i.name) for i in session.get_inputs()}
    rows = []
    for shape in args.shapes.split(","):
        prompt, new = (int(v) for v in shape.split("x"))
        for batch in (int(b) for b in args.batch.split(",")):
            feeds = feeds_for(prompt, new, batch, types)
            session.run(None, feeds)  # warm-up: allocation for this shape
            wall, cpu = [], []
            for _ in range(args.runs):
                c0, w0 = time.process_time(), time.perf_counter()
                wave = session.run(None, feeds)[0]
                wall.append(time.perf_counter() - w0)
                cpu.append(time.process_time() - c0)
            assert wave.shape == (batch, new * 960), wave.shape
            cpu_s, gflop = statistics.median(cpu), note_gflop(prompt, new)
            row: dict[str, float | str] = {
                "prompt": prompt,
                "new": new,
                "batch": batch,
                "wall_ms": round(1000 * statistics.median(wall), 1),
                "wall_ms_per_row": round(1000 * statistics.median(wall) / batch, 1),
                "cpu_s": round(cpu_s, 3),
                "note_gflop": round(gflop, 1),
            }
            note = NOTE_CPU_S.get((prompt, new))
            if note and batch == 1 and args.threads == 1 and args.device == "cpu":
                row["note_cpu_s"] = f"{note[0]}-{note[1]}"
                row["ratio_to_note"] = f"{cpu_s / note[1]:.2f}-{cpu_s / note[0]:.2f}"
                row["gflop_per_s"] = round(gflop / cpu_s, 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("| P | N | batch | ms / call | ms / row | CPU s | note CPU s (1 core) | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['prompt']} | {r['new']} | {r['batch']} | {r['wall_ms']} | {r['wall_ms_per_row']} | "
            f"{r['cpu_s']} | {r.get('note_cpu_s', '')} | {r.get('ratio_to_note', '')} |"
        )
    if args.json:
        info = {"providers": session.get_providers(), "threads": args.threads, "dtype": args.dtype}
        args.json.write_text(json.dumps({"session": info, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
