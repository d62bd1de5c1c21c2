"""The S3 voice backend against a real S3-compatible server (SeaweedFS started by the test):
the same guarantees as the local folder (visible only when whole, a crash never loses the old
version), plus what replicas need (each sees the others' writes within the staleness bound)."""

import threading

import numpy as np
import pytest

from chatterbox_server.errors import VoiceStoreUnavailableError
from chatterbox_server.voice_store import S3VoiceBackend, VoiceStore
from chatterbox_server.voice_store.s3 import DATA_PREFIX, make_s3_client
from tests.voice_store.test_local import MODEL, voice


class Crash(BaseException):
    """Stands for the process dying at this instant."""


class CrashingClient:
    """A real boto3 client whose `step`-th write (put or delete) never happens: the process died."""

    def __init__(self, client, step: int):
        self._client, self._step, self.writes = client, step, 0

    def _count(self, real):
        def call(*args, **kwargs):
            self.writes += 1
            if self.writes == self._step:
                raise Crash(f"crash at write {self._step}")
            return real(*args, **kwargs)

        return call

    def __getattr__(self, name):
        real = getattr(self._client, name)
        return self._count(real) if name in ("put_object", "delete_object", "delete_objects") else real


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def replica(bucket: str, revalidate_s: float = 0.0, client=None, clock=None, **backend) -> VoiceStore:
    """One server's view of the shared store."""
    store = VoiceStore(
        S3VoiceBackend(f"s3://{bucket}/tts", client=client, **backend),
        MODEL,
        revalidate_s=revalidate_s,
        **({"clock": clock} if clock else {}),
    )
    store.open()
    return store


def data_keys(bucket: str) -> list[str]:
    listed = make_s3_client().list_objects_v2(Bucket=bucket, Prefix=f"tts/{DATA_PREFIX}")
    return sorted(o["Key"] for o in listed.get("Contents", []))


def test_a_voice_saved_by_one_replica_is_read_whole_by_another(s3_bucket):
    source, embedding = voice(1)
    a, b = replica(s3_bucket), replica(s3_bucket)
    saved = a.save("alice", source, embedding)
    record = b.get("alice")
    assert record == saved
    loaded = b.load_embedding(record)
    assert loaded is not None
    np.testing.assert_array_equal(loaded.audio_features, embedding.audio_features)
    np.testing.assert_array_equal(loaded.speaker_embeddings, embedding.speaker_embeddings)
    assert b.source_audio(record) == source
    assert [r.voice_id for r in b.records()] == ["alice"]
    assert len(data_keys(s3_bucket)) == 2  # source and embedding of the one version


def test_re_registration_replaces_the_data_and_removes_the_old_version(s3_bucket):
    store = replica(s3_bucket)
    first = store.save("bob", *voice(1))
    second = store.save("bob", *voice(2))
    assert first.version != second.version
    assert all(f"/{second.version}/" in key for key in data_keys(s3_bucket))
    assert store.load_embedding(store.get("bob")).content_hash == "hash-2"


@pytest.mark.parametrize("step", [1, 2, 3])  # put source, put embedding, put record (the commit)
def test_a_crash_while_replacing_keeps_the_old_version_whole(s3_bucket, step):
    old_source, old_voice = voice(1)
    replica(s3_bucket).save("carol", old_source, old_voice)
    crashing = replica(s3_bucket, client=CrashingClient(make_s3_client(), step))
    with pytest.raises(Crash):
        crashing.save("carol", *voice(2))
    other = replica(s3_bucket)
    record = other.get("carol")
    assert record is not None and record.content_hash == "hash-1"
    assert other.source_audio(record) == old_source
    np.testing.assert_array_equal(other.load_embedding(record).audio_features, old_voice.audio_features)


@pytest.mark.parametrize("step", [1, 2, 3])
def test_a_crash_during_a_first_registration_leaves_no_voice(s3_bucket, step):
    crashing = replica(s3_bucket, client=CrashingClient(make_s3_client(), step))
    with pytest.raises(Crash):
        crashing.save("dave", *voice(3))
    other = replica(s3_bucket)
    assert other.get("dave") is None and other.records() == []


def test_a_crash_after_the_commit_leaves_the_new_version_and_open_sweeps_the_old(s3_bucket):
    replica(s3_bucket).save("erin", *voice(1))
    crashing = replica(s3_bucket, client=CrashingClient(make_s3_client(), 4))  # 4: deleting the old version
    with pytest.raises(Crash):
        crashing.save("erin", *voice(2))
    assert len(data_keys(s3_bucket)) == 4  # both versions' data: the old is now unreferenced
    young = replica(s3_bucket)  # leftovers younger than the orphan age may be a write in progress: kept
    assert len(data_keys(s3_bucket)) == 4
    replica(s3_bucket, orphan_age_s=0.0)  # a replica starting later removes them
    keys = data_keys(s3_bucket)
    record = young.get("erin")
    assert len(keys) == 2 and all(f"/{record.version}/" in k for k in keys)
    assert young.load_embedding(record).content_hash == "hash-2"


def test_changes_reach_other_replicas_within_the_revalidation_interval(s3_bucket):
    clock = Clock()
    writer = replica(s3_bucket)
    reader = replica(s3_bucket, revalidate_s=5.0, clock=clock)
    assert reader.get("frank") is None  # remembered as missing for 5 s
    writer.save("frank", *voice(1))
    assert reader.get("frank") is None
    clock.now += 5.0
    assert reader.get("frank").content_hash == "hash-1"
    writer.save("frank", *voice(2))
    clock.now += 4.9
    assert reader.get("frank").content_hash == "hash-1"  # within the bound: the cached record
    clock.now += 0.1
    assert reader.get("frank").content_hash == "hash-2"
    writer.delete("frank")
    assert reader.get("frank") is not None
    clock.now += 5.0
    assert reader.get("frank") is None
    assert reader.records() == []


def test_concurrent_registrations_of_one_id_leave_a_readable_voice(s3_bucket):
    a, b = replica(s3_bucket), replica(s3_bucket)
    errors = []

    def register(store, seed):
        try:
            for i in range(6):
                store.save("gina", *voice(seed + 10 * i))
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=register, args=(s, seed)) for s, seed in ((a, 1), (b, 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    fresh = replica(s3_bucket)
    record = fresh.get("gina")
    assert fresh.load_embedding(record) is not None and fresh.source_audio(record)


def test_ids_that_no_registration_can_have_never_reach_the_store(s3_bucket):
    store = replica(s3_bucket)
    for bad in ("../meta/x", "a/b", "", "x" * 65, "evil\n"):
        assert store.get(bad) is None


def test_a_missing_bucket_is_one_clear_error(s3_env):
    with pytest.raises(VoiceStoreUnavailableError, match="does not exist"):
        replica("no-such-bucket-here")


def test_an_unreachable_store_is_a_typed_error_not_a_hang(monkeypatch):
    from chatterbox_server.benchmark.server_process import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    store = VoiceStore(S3VoiceBackend("s3://voices/tts"), MODEL)
    with pytest.raises(VoiceStoreUnavailableError):
        store.get("alice")
    with pytest.raises(VoiceStoreUnavailableError):
        store.save("alice", *voice(1))


@pytest.mark.server
def test_a_replica_with_a_stale_record_follows_a_re_registration_made_elsewhere(
    s3_bucket, model_dir, tmp_path, voice_a, voice_b
):
    """Replica A caches alice's record (for a long revalidation interval here); replica B replaces
    alice, deleting the data A's record names. A must read the new record, not answer 404."""
    import hashlib

    import httpx

    from chatterbox_server.audio import prepare_reference_audio
    from chatterbox_server.benchmark.server_process import serve_in_thread
    from chatterbox_server.server import Settings, create_app
    from chatterbox_server.server.app import model_identity
    from tts_engine import TTSConfig, TTSEngine

    store = f"s3://{s3_bucket}/tts"
    engine = TTSEngine(TTSConfig(model_dir=model_dir, model_dtype="fp32"))
    settings = Settings(
        voices_dir=tmp_path / "unused", voice_store=store, voice_revalidate_s=600, voice_cache_size=1, warmup=False
    )
    with serve_in_thread(create_app(settings, engine)) as url, httpx.Client(base_url=url, timeout=60) as a:
        for voice_id, clip in (("alice", voice_a), ("bob", voice_b)):
            with open(clip, "rb") as f:
                assert a.post("/voices/register", files={"voice_file": f}, data={"voice_id": voice_id}).is_success
        # bob's registration evicted alice's encoder outputs (cache of 1); A still holds alice's record
        # replica B (same model) registers alice anew; the data of the version A's record names is deleted
        other = VoiceStore(S3VoiceBackend(store), model_identity(engine, settings))
        source = voice_b.read_bytes()
        samples = prepare_reference_audio(source, max_seconds=settings.max_voice_seconds)
        other.save("alice", source, engine.encode_audio(samples, hashlib.sha256(source).hexdigest()))
        spoken = a.post("/tts", data={"text": "Still there?", "voice_id": "alice", "stream": "false"})
        assert spoken.status_code == 200, spoken.text
        assert a.get("/voices/alice").json()["duration"] == pytest.approx(7.5)  # the new record
