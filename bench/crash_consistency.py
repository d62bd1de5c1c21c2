"""Crash consistency: SIGKILL a registration at each of its write steps, restart the real server
on what is left, and check that no voice was lost or half-made and nothing was left behind.

The registration runs VoiceStore.save() in a child process whose filesystem commit points
(os.replace, os.rename, shutil.rmtree) are counted; at step k the child kills itself with
SIGKILL, so no cleanup code runs, as in a real crash. Then the server starts on the folder.

    python -m bench.crash_consistency --model-dir .cache/stand-in/tiny
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import soundfile as sf

from bench.engine_speed import reference_clip
from chatterbox_server.benchmark.server_process import ServerProcess

CHILD = r"""
import os, shutil, signal, sys
from chatterbox_server.voice_store import LocalVoiceBackend, VoiceStore
from chatterbox_server.voice_store import local as voice_store
root, voice_id, source_path, step = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
store = VoiceStore(LocalVoiceBackend(root), sys.argv[5])
store.open()
template = store.load_embedding(store.get("template"))
calls = [0]
def counted(real):
    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] == step:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return wrapper
voice_store.os.replace = counted(os.replace)
voice_store.os.rename = counted(os.rename)
voice_store.shutil.rmtree = counted(shutil.rmtree)
from dataclasses import replace
source = open(source_path, "rb").read()
store.save(voice_id, source, replace(template, content_hash="new-" + str(step)))
print("completed")
"""


def leftovers(root: Path) -> list[str]:
    bad = [str(p.relative_to(root)) for p in root.rglob("*") if p.name.startswith(".")]
    bad += [p.name for p in root.iterdir() if p.is_dir() and not (p / "meta.json").is_file()]
    return bad


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=Path(".cache/stand-in/tiny"))
    parser.add_argument("--steps", type=int, default=8, help="kill at steps 1..N (N past the last: no kill)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="crash-"))
    clip = work / "voice.wav"
    sf.write(clip, reference_clip(), 24_000)
    model_dir = args.model_dir.resolve()
    base = work / "base"
    server = ServerProcess(model_dir, base, work / "base.log", ready_timeout_s=300, warmup="false")
    try:
        server.register(clip, "template")  # a real embedding the child re-saves under other ids
        server.register(clip, "alice")
    finally:
        server.stop()
    model_identity = json.loads((base / "alice" / "meta.json").read_text())["model"]
    rows, ok = [], True
    for scenario, voice_id in (("re-register", "alice"), ("first registration", "bob")):
        for step in range(1, args.steps + 1):
            voices = work / f"{voice_id}-{step}"
            shutil.copytree(base, voices)
            child = subprocess.run(
                [sys.executable, "-c", CHILD, str(voices), voice_id, str(clip), str(step), model_identity],
                capture_output=True,
                text=True,
            )
            killed = child.returncode == -9
            server = ServerProcess(
                model_dir, voices, work / f"{voice_id}-{step}.log", ready_timeout_s=300, warmup="false"
            )
            try:
                listed = {v["voice_id"] for v in httpx.get(server.url + "/voices").json()["voices"]}
                speaks = (
                    httpx.post(
                        server.url + "/tts", data={"text": "Hi.", "voice_id": voice_id, "stream": "false"}, timeout=120
                    ).status_code
                    if voice_id in listed
                    else None
                )
                version = (
                    json.loads((voices / voice_id / "meta.json").read_text())["content_hash"]
                    if voice_id in listed
                    else None
                )
            finally:
                server.stop()
            left = leftovers(voices)
            outcome = "absent" if voice_id not in listed else ("new" if str(version).startswith("new-") else "old")
            intact = {"template", "alice"} <= listed
            consistent = (
                not left
                and intact
                and (outcome == "absent" or speaks == 200)
                and (scenario != "re-register" or outcome != "absent")
            )
            row: dict[str, object] = {
                "scenario": scenario,
                "kill_at_step": step if killed else None,
                "voice": outcome,
                "speaks": speaks,
                "leftovers": left,
                "other_voices_intact": intact,
                "ok": consistent,
            }
            ok = ok and consistent
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"{sum(bool(r['ok']) for r in rows)}/{len(rows)} crash points consistent")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
