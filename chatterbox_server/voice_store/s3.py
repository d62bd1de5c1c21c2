"""Voices in an S3-compatible bucket (AWS S3, MinIO, SeaweedFS, R2, GCS interop), shared by replicas.

Layout under `s3://bucket/prefix/`:
    meta/<voice_id>.json                          the commit record (names the version and checksums)
    data/<voice_id>/<version>/source.audio        the reference clip as uploaded
    data/<voice_id>/<version>/embedding.npz       its encoder outputs

A registration writes its data under a fresh version, then the record (one PUT, atomic in S3):
the voice is visible only when whole, and the version it replaces stays readable until the new
record is in place; only then is the old version's data deleted. A crash leaves at most
unreferenced data, which `open()` removes once it is older than ORPHAN_AGE_S (no write takes that
long, so a registration in progress on another replica is never touched). Deleting removes the
record first. Endpoint, region and credentials come from the standard AWS environment and
credential chain (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, profiles, IAM roles).
"""

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

from chatterbox_server.errors import VoiceStoreUnavailableError
from chatterbox_server.voice_store.records import VoiceDataError, VoiceRecord

logger = logging.getLogger(__name__)

META_PREFIX, DATA_PREFIX = "meta/", "data/"
SOURCE_NAME, EMBEDDING_NAME = "source.audio", "embedding.npz"
ORPHAN_AGE_S = 3600.0  # unreferenced data older than this is a crashed write's, never one in progress
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0
MAX_ATTEMPTS = 3
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


def parse_s3_url(url: str) -> tuple[str, str]:
    """s3://bucket/some/prefix → ("bucket", "some/prefix/"); ValueError for anything else."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"voice store must look like s3://bucket/prefix, got {url!r}")
    prefix = parsed.path.strip("/")
    return parsed.netloc, f"{prefix}/" if prefix else ""


def make_s3_client(addressing_style: str | None = None) -> Any:
    """A boto3 S3 client from the standard AWS environment, with bounded timeouts and retries.

    Path-style addressing is the default when an endpoint is configured (MinIO, SeaweedFS and
    most self-hosted stores are addressed by host name or IP, with no per-bucket DNS).
    """
    import boto3
    from botocore.config import Config

    if addressing_style is None:
        addressing_style = "path" if any(os.environ.get(v) for v in ENDPOINT_VARIABLES) else "auto"
    config = Config(
        connect_timeout=CONNECT_TIMEOUT_S,
        read_timeout=READ_TIMEOUT_S,
        retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
        s3={"addressing_style": addressing_style},
        # we check sha256 of every object ourselves; the newer default trailing checksums are
        # refused by several S3-compatible stores
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.session.Session().client("s3", config=config)


class S3VoiceBackend:
    """A bucket prefix holding voices; any number of replicas read and write it."""

    kind = "s3"
    scheme = "s3"
    url_form = "s3://bucket/prefix"
    shared = True

    def __init__(self, url: str, client: Any = None, orphan_age_s: float = ORPHAN_AGE_S):
        self.bucket, self.prefix = parse_s3_url(url)
        self.location = url
        self.client = client if client is not None else make_s3_client()
        self.orphan_age_s = orphan_age_s
        self._etags: dict[str, tuple[str, VoiceRecord]] = {}  # meta key → (ETag, record): lists GET only changes

    @classmethod
    def check_url(cls, url: str) -> None:
        """ValueError unless `url` is s3://bucket[/prefix] (the bucket is not contacted)."""
        parse_s3_url(url)

    # ----- keys ---------------------------------------------------------------------------------

    def _meta_key(self, voice_id: str) -> str:
        return f"{self.prefix}{META_PREFIX}{voice_id}.json"

    def _data_key(self, record: VoiceRecord, name: str) -> str:
        return f"{self.prefix}{DATA_PREFIX}{record.voice_id}/{record.version}/{name}"

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Any failure to reach the store (after botocore's retries) is one typed error: 503."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "?")
            raise VoiceStoreUnavailableError(f"voice store {self.location}: {action} failed ({code})") from e
        except BotoCoreError as e:
            raise VoiceStoreUnavailableError(f"voice store {self.location}: {action} failed ({e})") from e

    def _get(self, key: str) -> tuple[bytes, str] | None:
        """(body, ETag) of an object, or None if there is none."""
        from botocore.exceptions import ClientError

        with self._errors(f"reading {key}"):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=key)
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
                    return None
                raise
            return response["Body"].read(), response.get("ETag", "")

    def _objects(self, prefix: str) -> Iterator[dict[str, Any]]:
        with self._errors(f"listing {prefix}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                yield from page.get("Contents", [])

    def _delete_keys(self, keys: list[str]) -> None:
        with self._errors("deleting objects"):
            for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
                batch = [{"Key": k} for k in keys[start : start + 1000]]
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    # ----- start-up -----------------------------------------------------------------------------

    def check(self) -> None:
        """The bucket exists and answers with these credentials."""
        from botocore.exceptions import ClientError

        with self._errors(f"opening bucket {self.bucket!r}"):
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket", "NotFound"):
                    raise VoiceStoreUnavailableError(
                        f"bucket {self.bucket!r} does not exist at {self.client.meta.endpoint_url}: create it first"
                    ) from None
                raise

    def open(self) -> None:
        """Check the bucket answers, then remove data no record references (old crashed writes)."""
        self.check()
        self.remove_orphans()

    def remove_orphans(self, now: float | None = None) -> int:
        """Delete data versions that no record names and that are older than orphan_age_s."""
        now = time.time() if now is None else now
        current = {r.voice_id: r.version for r in self.list_records()}
        stale = []
        for obj in self._objects(self.prefix + DATA_PREFIX):
            parts = obj["Key"][len(self.prefix + DATA_PREFIX) :].split("/")
            if len(parts) != 3 or current.get(parts[0]) == parts[1]:
                continue
            if now - obj["LastModified"].timestamp() > self.orphan_age_s:
                stale.append(obj["Key"])
        if stale:
            logger.warning("removing %d objects left by interrupted voice writes", len(stale))
            self._delete_keys(stale)
        return len(stale)

    # ----- reading ------------------------------------------------------------------------------

    def list_records(self) -> list[VoiceRecord]:
        records, seen = [], set()
        for obj in self._objects(self.prefix + META_PREFIX):
            key, etag = obj["Key"], obj.get("ETag", "")
            seen.add(key)
            cached = self._etags.get(key)
            if cached is not None and cached[0] == etag:
                records.append(cached[1])
                continue
            voice_id = key[len(self.prefix + META_PREFIX) :].removesuffix(".json")
            record = self.read_record(voice_id)  # changed or new since the last list
            if record is not None:
                records.append(record)
        for key in set(self._etags) - seen:
            self._etags.pop(key, None)
        return records

    def read_record(self, voice_id: str) -> VoiceRecord | None:
        key = self._meta_key(voice_id)
        found = self._get(key)
        if found is None:
            self._etags.pop(key, None)
            return None
        body, etag = found
        try:
            record = VoiceRecord.from_json(body)
        except ValueError as e:
            logger.warning("ignoring %s: unreadable record (%s)", key, e)
            return None
        if record.voice_id != voice_id or not record.version:
            logger.warning("ignoring %s: it names voice %r, version %r", key, record.voice_id, record.version)
            return None
        self._etags[key] = (etag, record)
        return record

    def _read_data(self, record: VoiceRecord, name: str) -> bytes:
        found = self._get(self._data_key(record, name))
        if found is None:
            raise VoiceDataError(f"{name} of voice {record.voice_id!r} version {record.version} is gone")
        return found[0]

    def read_source(self, record: VoiceRecord) -> bytes:
        return self._read_data(record, SOURCE_NAME)

    def read_embedding(self, record: VoiceRecord) -> bytes:
        return self._read_data(record, EMBEDDING_NAME)

    # ----- writing ------------------------------------------------------------------------------

    def write(self, record: VoiceRecord, source: bytes, embedding: bytes) -> None:
        previous = self.read_record(record.voice_id)
        with self._errors(f"writing voice {record.voice_id!r}"):
            self.client.put_object(Bucket=self.bucket, Key=self._data_key(record, SOURCE_NAME), Body=source)
            self.client.put_object(Bucket=self.bucket, Key=self._data_key(record, EMBEDDING_NAME), Body=embedding)
            self.client.put_object(  # the commit point
                Bucket=self.bucket,
                Key=self._meta_key(record.voice_id),
                Body=record.to_json(),
                ContentType="application/json",
            )
        # Only the version this write replaced is removed: another replica's registration of the
        # same id may have its data in flight, and is never touched.
        if previous is not None and previous.version != record.version:
            self._delete_version(previous)

    def _delete_version(self, record: VoiceRecord) -> None:
        try:
            self._delete_keys([self._data_key(record, SOURCE_NAME), self._data_key(record, EMBEDDING_NAME)])
        except VoiceStoreUnavailableError as e:  # the voice is committed; leftovers go at the next open()
            logger.warning("old data of voice %r not removed: %s", record.voice_id, e)

    def delete(self, voice_id: str) -> bool:
        record = self.read_record(voice_id)
        if record is None:
            return False
        with self._errors(f"deleting voice {voice_id!r}"):
            self.client.delete_object(Bucket=self.bucket, Key=self._meta_key(voice_id))  # uncommit first
        self._etags.pop(self._meta_key(voice_id), None)
        self._delete_version(record)
        return True
