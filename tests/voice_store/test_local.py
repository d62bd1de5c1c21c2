"""The voice store survives a crash at any write step: no voice lost, no half voice, no leftovers."""

import contextlib
import os
import shutil

import numpy as np
import pytest

from chatterbox_server.engine import VoiceEmbedding
from chatterbox_server.voice_store import LocalVoiceBackend, VoiceStore
from chatterbox_server.voice_store import local as voice_store

MODEL = "stand-in@main:fp32"


class Crash(BaseException):
    """Stands for the process dying at this instant."""


def voice(seed: int) -> tuple[bytes, VoiceEmbedding]:
    rng = np.random.default_rng(seed)
    source = rng.bytes(4096)
    embedding = VoiceEmbedding(
        audio_features=rng.normal(size=(1, 20, 8)).astype(np.float32),
        audio_tokens=rng.integers(0, 6561, size=(1, 10)),
        speaker_embeddings=rng.normal(size=(1, 192)).astype(np.float32),
        speaker_features=rng.normal(size=(1, 20, 80)).astype(np.float32),
        content_hash=f"hash-{seed}",
        duration_s=6.0,
    )
    return source, embedding


def crash_at(monkeypatch, step: int) -> None:
    """Make the `step`-th filesystem commit point (replace, rename, or removing the old copy) crash."""
    calls = {"n": 0}

    def counting(real):
        def wrapper(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == step:
                raise Crash(f"crash at step {step}")
            return real(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(voice_store.os, "replace", counting(os.replace))
    monkeypatch.setattr(voice_store.os, "rename", counting(os.rename))
    monkeypatch.setattr(voice_store.shutil, "rmtree", counting(shutil.rmtree))


def store_at(root) -> VoiceStore:
    return VoiceStore(LocalVoiceBackend(root), MODEL)


def reopen(root) -> VoiceStore:
    store = store_at(root)
    store.open()
    return store


def assert_no_leftovers(root) -> None:
    for path in root.rglob("*"):
        assert not path.name.startswith("."), f"leftover {path}"
    for folder in root.iterdir():
        assert (folder / voice_store.META_FILE).is_file(), f"half voice {folder}"


# steps of a first registration: rmtree(staging), 3 atomic writes, rename(staging → final), rmtree(old)
# and of a re-registration: rmtree(staging), 3 writes, rename(final → old), rename(staging → final), rmtree(old)
@pytest.mark.parametrize("step", range(1, 8))
def test_a_crash_while_replacing_never_loses_the_voice(tmp_path, monkeypatch, step):
    old_source, old_voice = voice(1)
    new_source, new_voice = voice(2)
    store_at(tmp_path).save("alice", old_source, old_voice)
    crash_at(monkeypatch, step)
    crashed = True
    try:
        store_at(tmp_path).save("alice", new_source, new_voice)
        crashed = False
    except Crash:
        pass
    monkeypatch.undo()
    store = reopen(tmp_path)
    record = store.get("alice")
    assert record is not None, f"the voice was lost by a crash at step {step}"
    loaded = store.load_embedding(record)
    assert loaded is not None
    expected = new_voice if not crashed or record.content_hash == new_voice.content_hash else old_voice
    assert record.content_hash == expected.content_hash
    np.testing.assert_array_equal(loaded.audio_features, expected.audio_features)
    assert store.source_audio(record) == (new_source if expected is new_voice else old_source)
    assert_no_leftovers(tmp_path)


@pytest.mark.parametrize("step", range(1, 7))
def test_a_crash_during_a_first_registration_leaves_nothing_half_made(tmp_path, monkeypatch, step):
    source, embedding = voice(3)
    crash_at(monkeypatch, step)
    with contextlib.suppress(Crash):
        store_at(tmp_path).save("bob", source, embedding)
    monkeypatch.undo()
    store = reopen(tmp_path)
    record = store.get("bob")
    if record is not None:  # the crash came after the commit point: the voice is whole
        assert store.load_embedding(record) is not None and store.source_audio(record) == source
    assert_no_leftovers(tmp_path)


def test_leftovers_of_earlier_crashes_are_removed_at_start(tmp_path):
    source, embedding = voice(4)
    store_at(tmp_path).save("carol", source, embedding)
    (tmp_path / "orphan").mkdir()
    (tmp_path / "orphan" / "source.audio").write_bytes(b"x" * 1000)  # no meta.json: never committed
    (tmp_path / ".dave.new").mkdir()  # a staging folder whose voice never existed, half written
    (tmp_path / "carol" / ".embedding.npz.abc.tmp").write_bytes(b"partial")
    (tmp_path / ".stray.tmp").write_bytes(b"partial")
    store = reopen(tmp_path)
    assert [r.voice_id for r in store.records()] == ["carol"]
    assert_no_leftovers(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["carol"]


def test_an_interrupted_swap_is_finished_from_the_complete_copy(tmp_path):
    source, embedding = voice(5)
    store_at(tmp_path).save("erin", source, embedding)
    os.rename(tmp_path / "erin", tmp_path / ".erin.old")  # the crash fell between the two renames
    store = reopen(tmp_path)
    record = store.get("erin")
    assert record is not None and store.load_embedding(record) is not None
    assert_no_leftovers(tmp_path)
