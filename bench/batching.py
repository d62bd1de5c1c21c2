"""The whole pipeline, measured: the seed's design against the server, in one run.

Designs, all on the same model files and the same machine, interleaved level by level:
  seed    the model card's loop per request (full prefill, batch 1) on one inference thread,
          requests served one after another, one decoder call per request; its first audio is
          its whole file
  before  a server started from another checkout (--before-checkout DIR)
  after   the server of this checkout, streamed /tts (engine loop + vocoder stage)
  whole   the same server with stream=false: one decoder call per piece (the floor of decoder
          work per second of audio that streaming is compared with)
  NAME    a variant of `after` with extra server flags: --variant 'NAME=--lm-threads 1 --decoder-threads 1'
Each level runs `concurrency` clients at once, each sending --requests-per-client /tts requests
back to back; audio length comes from the bytes, RTF is wall latency / audio. For the servers,
/metrics before and after each level give the time inside language-model steps and decoder
calls (shares of the wall time; the two stages overlap) and decoder seconds per audio second.

    python -m bench.batching --model-dir .cache/stand-in/faithful --dtype fp32 \\
        --designs seed,after,whole --concurrency 1,2,4,8
"""

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import soundfile as sf
from prometheus_client.parser import text_string_to_metric_families
from tokenizers import Tokenizer

from bench.engine_speed import reference_clip
from chatterbox_server.benchmark.server_process import ServerProcess
from chatterbox_server.benchmark.stats import mean, percentile
from chatterbox_server.model.contract import SILENCE_TOKEN, START_SPEECH_TOKEN, STOP_SPEECH_TOKEN
from chatterbox_server.model.files import DTYPE_SUFFIXES
from chatterbox_server.text import normalize_text

SAMPLE_RATE_HZ = 24_000
WAV_HEADER_BYTES = 44
SENTENCES = (  # one piece each: the streaming overhead in full
    "Thanks for calling, how can I help you today?",
    "The quick brown fox jumps over the lazy dog, and then it naps in the sun.",
    "Before we begin, please make sure your microphone is muted.",
    "Hi there, this is Sarah calling you back about your order from last week.",
)
PARAGRAPHS = (  # agent-length replies of several pieces: only the first piece is streamed small
    "Thanks for calling, how can I help you today? I can check an order, change a delivery date, or "
    "answer a question about your bill. Just tell me what you need and I will take it from there.",
    "The quick brown fox jumps over the lazy dog, and then it naps in the sun. When it wakes up, it "
    "stretches, looks around the quiet field, and trots off to find something to eat before dusk.",
    "Before we begin, please make sure your microphone is muted. We will start with a short overview "
    "of the agenda, then hear from each team in turn, and leave ten minutes for questions at the end.",
    "Hi there, this is Sarah calling you back about your order from last week. The parcel left our "
    "warehouse this morning and should reach you on Thursday. You will get a tracking link by email.",
)
TEXT_SETS = {"sentences": SENTENCES, "paragraphs": PARAGRAPHS}


@dataclass
class Outcome:
    latency_s: float
    first_audio_s: float
    audio_s: float


STAGE_METRICS = {  # /metrics sample → what it measures
    "tts_engine_step_seconds_sum": "lm_s",
    "tts_decoder_seconds_total": "decoder_s",
    "tts_decoder_audio_seconds_total": "decoder_audio_s",
    "tts_decoder_calls_total": "decoder_calls",
}


class SeedDesign:
    """The seed: the model card's loop, literal, batch 1, on one inference thread."""

    def __init__(self, model_dir: Path, dtype: str, clip: np.ndarray):
        suffix = DTYPE_SUFFIXES[dtype]
        providers = ["CPUExecutionProvider"]

        def session(name: str) -> ort.InferenceSession:
            return ort.InferenceSession(str(model_dir / "onnx" / f"{name}{suffix}.onnx"), providers=providers)

        self.encoder, self.embed = session("speech_encoder"), session("embed_tokens")
        self.lm, self.decoder = session("language_model"), session("conditional_decoder")
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        kv = [i for i in self.lm.get_inputs() if i.name.startswith("past_key_values")]
        self.kv_names = [i.name for i in kv]
        self.kv_dtype = np.float16 if kv[0].type == "tensor(float16)" else np.float32
        # registered voices keep their encoder outputs (the seed did too)
        self.voice = self.encoder.run(None, {"audio_values": clip[None, :]})
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="seed-inference")
        self.stages = {"lm_s": 0.0, "decoder_s": 0.0, "decoder_audio_s": 0.0, "decoder_calls": 0.0}

    def stage_totals(self) -> dict[str, float]:
        return dict(self.stages)

    def speak(self, text: str) -> float:
        """Synthesize one text; returns seconds of audio."""
        started = time.perf_counter()
        cond, prompt_tokens, speaker_embeddings, speaker_features = self.voice[:4]
        ids = np.array([self.tokenizer.encode(normalize_text(text)).ids], dtype=np.int64)
        embeds = np.concatenate([cond, self.embed.run(None, {"input_ids": ids})[0]], axis=1).astype(np.float32)
        past = {n: np.zeros((1, 16, 0, 64), self.kv_dtype) for n in self.kv_names}
        mask = np.ones((1, embeds.shape[1]), np.int64)
        positions = np.arange(embeds.shape[1], dtype=np.int64)[None, :]
        generated = [START_SPEECH_TOKEN]
        for _ in range(1024):
            logits, *present = self.lm.run(
                None, {"inputs_embeds": embeds, "attention_mask": mask, "position_ids": positions, **past}
            )
            scores = logits[0, -1].astype(np.float32)
            seen = np.unique(generated)
            scores[seen] = np.where(scores[seen] < 0, scores[seen] * 1.2, scores[seen] / 1.2)
            token = int(np.argmax(scores))
            generated.append(token)
            if token == STOP_SPEECH_TOKEN:
                break
            mask = np.concatenate([mask, np.ones((1, 1), np.int64)], axis=1)
            positions = positions[:, -1:] + 1
            past = dict(zip(self.kv_names, present))
            embeds = self.embed.run(None, {"input_ids": np.array([[token]], dtype=np.int64)})[0]
        speech = [t for t in generated[1:] if t < START_SPEECH_TOKEN]
        tokens = np.concatenate([prompt_tokens[0], speech, [SILENCE_TOKEN] * 3]).astype(np.int64)[None, :]
        decoding = time.perf_counter()
        wave = self.decoder.run(
            None,
            {"speech_tokens": tokens, "speaker_embeddings": speaker_embeddings, "speaker_features": speaker_features},
        )[0]
        done = time.perf_counter()
        audio_s = wave.shape[-1] / SAMPLE_RATE_HZ
        self.stages["lm_s"] += decoding - started
        self.stages["decoder_s"] += done - decoding
        self.stages["decoder_audio_s"] += audio_s
        self.stages["decoder_calls"] += 1
        return audio_s

    async def one(self, text: str) -> Outcome:
        started = time.perf_counter()
        audio_s = await asyncio.get_running_loop().run_in_executor(self.thread, self.speak, text)
        latency = time.perf_counter() - started
        return Outcome(latency, latency, audio_s)


class ServerDesign:
    """A server process from a checkout, spoken to over HTTP with streamed /tts requests."""

    def __init__(
        self,
        checkout: Path,
        model_dir: Path,
        dtype: str,
        port: int,
        clip_path: Path,
        log: Path,
        stream: bool = True,
        extra_args: tuple[str, ...] = (),
        slots: int = 16,
    ):
        self.stream = stream
        flags = [
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--model-dir",
            str(model_dir),
            "--model-dtype",
            dtype,
            "--voices-dir",
            str(log.parent / f"voices-{port}"),
            "--max-concurrent-requests",
            str(slots),
            "--max-queue",
            str(4 * slots),
            "--request-timeout-s",
            "1200",
            *extra_args,
        ]
        # flags, not TTS_* settings: the other checkout may predate some of those variables
        self.server = ServerProcess(None, None, log, checkout=checkout, args=flags, port=port, ready_timeout_s=600)
        self.url = self.server.url
        self.server.register(clip_path, "bench")
        self.client = httpx.AsyncClient(base_url=self.url, timeout=1200, limits=httpx.Limits(max_connections=None))

    async def one(self, text: str) -> Outcome:
        started = time.perf_counter()
        first = None
        size = 0
        form = {"text": text, "voice_id": "bench", "stream": "true" if self.stream else "false"}
        async with self.client.stream("POST", "/tts", data=form) as r:
            r.raise_for_status()
            async for chunk in r.aiter_bytes():
                size += len(chunk)
                if first is None and size > WAV_HEADER_BYTES:
                    first = time.perf_counter() - started
        latency = time.perf_counter() - started
        return Outcome(latency, first if first is not None else latency, (size - WAV_HEADER_BYTES) / 2 / SAMPLE_RATE_HZ)

    def stage_totals(self) -> dict[str, float]:
        text = httpx.get(self.url + "/metrics", timeout=30).text
        samples = {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}
        return {key: float(samples.get(name, 0.0)) for name, key in STAGE_METRICS.items()}

    def stop(self) -> None:
        self.server.stop()


async def level(design, concurrency: int, per_client: int, texts: tuple[str, ...]) -> dict:
    async def client(index: int) -> list[Outcome]:
        return [await design.one(texts[(index + k) % len(texts)]) for k in range(per_client)]

    before = design.stage_totals()
    started = time.perf_counter()
    outcomes = [o for batch in await asyncio.gather(*(client(i) for i in range(concurrency))) for o in batch]
    wall = time.perf_counter() - started
    stages = {k: v - before[k] for k, v in design.stage_totals().items()}
    rtf = [o.latency_s / o.audio_s for o in outcomes]
    first = [o.first_audio_s for o in outcomes]
    return {
        "concurrency": concurrency,
        "requests": len(outcomes),
        "wall_s": round(wall, 2),
        "audio_s": round(sum(o.audio_s for o in outcomes), 2),
        "audio_per_wall_s": round(sum(o.audio_s for o in outcomes) / wall, 3),
        "rtf_mean": round(mean(rtf) or 0, 3),
        "rtf_p95": round(percentile(rtf, 95) or 0, 3),
        "ttfa_p50_s": round(percentile(first, 50) or 0, 3),
        "ttfa_p95_s": round(percentile(first, 95) or 0, 3),
        "lm_share": round(stages["lm_s"] / wall, 3),
        "decoder_share": round(stages["decoder_s"] / wall, 3),
        "decoder_calls": int(stages["decoder_calls"]),
        "decoder_s_per_audio_s": round(stages["decoder_s"] / stages["decoder_audio_s"], 3)
        if stages["decoder_audio_s"]
        else 0.0,
    }


def report(results: dict[str, list[dict]]) -> str:
    lines = [
        "| design | conc | audio s / wall s | RTF mean | RTF p95 | TTFA p50 | TTFA p95 | LM share | decoder share"
        " | decoder calls | decoder s / audio s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, levels in results.items():
        for lv in levels:
            lines.append(
                f"| {name} | {lv['concurrency']} | {lv['audio_per_wall_s']:.2f} | {lv['rtf_mean']:.2f} | "
                f"{lv['rtf_p95']:.2f} | {lv['ttfa_p50_s']:.2f} s | {lv['ttfa_p95_s']:.2f} s | "
                f"{lv['lm_share']:.0%} | {lv['decoder_share']:.0%} | {lv['decoder_calls']} | "
                f"{lv['decoder_s_per_audio_s']:.2f} |"
            )
    by = {name: {lv["concurrency"]: lv for lv in levels} for name, levels in results.items()}
    for mine in [n for n in by if n not in ("seed", "before", "whole")]:
        for other in ("seed", "before"):
            for c in sorted(set(by[mine]) & set(by.get(other, {}))):
                a, o = by[mine][c], by[other][c]
                lines.append(
                    f"{mine} / {other} at {c}: throughput {a['audio_per_wall_s'] / o['audio_per_wall_s']:.2f}x, "
                    f"first audio {a['ttfa_p50_s'] / o['ttfa_p50_s']:.2f}x of {other}'s (p50)"
                )
        for c in sorted(set(by[mine]) & set(by.get("whole", {}))):
            a, w = by[mine][c], by["whole"][c]
            if w["decoder_s_per_audio_s"]:
                lines.append(
                    f"{mine} at {c}: decoder work per audio second {a['decoder_s_per_audio_s'] / w['decoder_s_per_audio_s']:.2f}x"
                    " that of one call per piece"
                )
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> dict:
    clip = reference_clip()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    clip_path = work / "voice.wav"
    sf.write(clip_path, clip, SAMPLE_RATE_HZ)
    designs: dict = {}
    if "seed" in args.designs:
        designs["seed"] = SeedDesign(args.model_dir, args.dtype, clip)
    here = Path(__file__).resolve().parents[1]
    servers: dict[str, tuple[Path | None, bool, tuple[str, ...]]] = {
        "before": (args.before_checkout, True, ()),
        "after": (here, True, ()),
        "whole": (here, False, ()),
    }
    for spec in args.variant:
        name, _, flags = spec.partition("=")
        servers[name] = (here, True, tuple(flags.split()))
        args.designs.append(name)
    port = args.port
    for name, (checkout, stream, extra) in servers.items():
        if name in args.designs and checkout is not None:
            designs[name] = ServerDesign(
                Path(checkout),
                args.model_dir,
                args.dtype,
                port,
                clip_path,
                work / f"{name}.log",
                stream,
                extra,
                slots=max(16, *args.concurrency),
            )
            port += 1
    try:
        for design in designs.values():  # warm up each: one request
            await design.one(SENTENCES[0])
        results: dict[str, list[dict]] = {name: [] for name in designs}
        for c in args.concurrency:
            for name, design in designs.items():
                figures = await level(design, c, args.requests_per_client, TEXT_SETS[args.texts])
                results[name].append(figures)
                print(json.dumps({"design": name, **figures}), file=sys.stderr, flush=True)
        return results
    finally:
        for design in designs.values():
            if isinstance(design, ServerDesign):
                await design.client.aclose()
                design.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=Path(".cache/stand-in/faithful"))
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--before-checkout", type=Path, help="a checkout of the code to compare against")
    parser.add_argument("--designs", default="seed,after,whole")
    parser.add_argument("--variant", action="append", default=[], help="NAME=server flags: another `after`")
    parser.add_argument("--concurrency", default="1,2,4,8")
    parser.add_argument("--requests-per-client", type=int, default=1)
    parser.add_argument("--texts", choices=sorted(TEXT_SETS), default="sentences")
    parser.add_argument("--port", type=int, default=8850)
    parser.add_argument("--work-dir", default=".cache/bench-batching")
    parser.add_argument("--json", type=Path, help="also write every figure here")
    args = parser.parse_args()
    args.model_dir = args.model_dir.resolve()  # the servers run from their own checkouts
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.designs = args.designs.split(",")
    results = asyncio.run(run(args))
    table = report(results)
    print(table)
    if args.json:
        machine = {"platform": platform.platform(), "cpu_count": os.cpu_count()}
        args.json.write_text(
            json.dumps(
                {
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "machine": machine,
                    "results": results,
                    "table": table,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
