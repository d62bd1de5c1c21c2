"""The realtime session table (server/sessions.py): sessions in all and per client, who the client
is, and that a session is given back however it ends. No server, no clock."""

import hashlib

import pytest

from chatterbox_server.server.admission import QueueFullError
from chatterbox_server.server.auth import ApiKeys
from chatterbox_server.server.http_errors import error_type, status_of
from chatterbox_server.server.sessions import SessionTable, TooManySessionsError, client_at, client_of


def table(max_sessions: int = 4, max_per_client: int = 2) -> tuple[SessionTable, list[str]]:
    refusals: list[str] = []
    return SessionTable(max_sessions, max_per_client, on_refuse=refusals.append), refusals


def test_acquire_and_release_count_each_client_and_the_total():
    sessions, refusals = table()
    a1, a2, b = sessions.acquire("a"), sessions.acquire("a"), sessions.acquire("b")
    assert (len(sessions), sessions.held_by("a"), sessions.held_by("b"), sessions.held_by("c")) == (3, 2, 1, 0)
    a1.release()
    assert (len(sessions), sessions.held_by("a")) == (2, 1)
    a2.release()
    b.release()
    assert len(sessions) == 0 and sessions._open == {}  # nothing left of clients that left
    assert refusals == []


def test_a_client_at_its_limit_is_refused_while_others_get_in():
    sessions, refusals = table(max_sessions=4, max_per_client=2)
    first, _ = sessions.acquire("a"), sessions.acquire("a")
    with pytest.raises(TooManySessionsError) as refused:
        sessions.acquire("a")
    assert (status_of(refused.value), error_type(refused.value)) == (429, "too_many_sessions")
    assert sessions.held_by("a") == 2 and len(sessions) == 2  # the refusal took nothing
    sessions.acquire("b")  # another client still gets in
    first.release()
    sessions.acquire("a")  # and so does this one, once it closed one
    assert refusals == ["too_many_sessions"]


def test_when_every_session_is_taken_everyone_is_refused_as_queue_full():
    sessions, refusals = table(max_sessions=3, max_per_client=2)
    for client in ("a", "a", "b"):
        sessions.acquire(client)
    for client in ("b", "c"):
        with pytest.raises(QueueFullError) as refused:
            sessions.acquire(client)
        assert not isinstance(refused.value, TooManySessionsError)
        assert (status_of(refused.value), error_type(refused.value)) == (429, "queue_full")
    with pytest.raises(TooManySessionsError):  # a client over its own limit hears that first
        sessions.acquire("a")
    assert refusals == ["sessions_full", "sessions_full", "too_many_sessions"] and len(sessions) == 3


def test_a_session_is_given_back_when_its_block_raises_and_only_once():
    sessions, _ = table(max_sessions=2, max_per_client=2)
    with pytest.raises(RuntimeError), sessions.acquire("a"):
        assert sessions.held_by("a") == 1
        raise RuntimeError("the session failed")
    assert len(sessions) == 0
    kept = sessions.acquire("a")
    with sessions.acquire("a") as lease:
        lease.release()  # released early (say, by an error path), then again by the block's end
    assert sessions.held_by("a") == 1  # the other session of this client is still held
    kept.release()
    kept.release()
    assert len(sessions) == 0 and sessions._open == {}


def scope(headers: dict[str, str], client: tuple[str, int] | None = ("203.0.113.7", 50000)) -> dict:
    return {
        "type": "websocket",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": client,
    }


def test_the_client_is_its_valid_key_with_keys_set_else_its_address():
    keys = ApiKeys("k1,sha256:" + hashlib.sha256(b"k2").hexdigest())
    by_bearer = client_of(scope({"Authorization": "Bearer k1"}), keys)
    by_xi = client_of(scope({"xi-api-key": "k1"}, client=("198.51.100.1", 1)), keys)
    assert by_bearer == by_xi  # one key is one client, wherever it connects from
    assert "k1" not in by_bearer  # the table holds a digest, not the secret
    assert client_of(scope({"xi-api-key": "k2"}), keys) != by_bearer
    assert client_of(scope({"xi-api-key": "wrong"}), keys) == "address 203.0.113.7"
    no_keys = ApiKeys("")
    assert client_of(scope({"Authorization": "Bearer k1"}), no_keys) == "address 203.0.113.7"  # keys off: the address
    assert client_of(scope({}, client=("203.0.113.7", 60000)), no_keys) == "address 203.0.113.7"  # any port
    assert client_of(scope({}, client=None), no_keys) == client_at(None) == "address unknown"
    assert client_at(("203.0.113.7", 1234)) == "address 203.0.113.7"  # a Wyoming peer counts as the same client
