"""Route facts (server/routes.py): what each route declares is what the middleware finds for a
request to it, including a path that exists with another method and a socket."""

import pytest

from chatterbox_server.server.routers import health, openai, realtime, tts, voices, web
from chatterbox_server.server.routes import Access, Body, ErrorShape, RouteFacts, facts_for, paths_where

ROUTES = [route for module in (health, voices, tts, openai, realtime, web) for route in module.router.routes]


def scope(path: str, method: str | None = "GET") -> dict:
    kind = "http" if method else "websocket"
    return {"type": kind, "path": path, "method": method, "root_path": "", "headers": []}


@pytest.mark.parametrize(
    ("path", "method", "facts"),
    [
        ("/tts", "POST", RouteFacts(Body.UPLOAD, synthesis=True)),
        ("/tts", "GET", RouteFacts(Body.UPLOAD, synthesis=True)),  # a 405 to come: the same route's facts
        ("/tts/json", "POST", RouteFacts(Body.JSON, synthesis=True)),
        ("/v1/audio/speech", "POST", RouteFacts(Body.JSON, synthesis=True, errors=ErrorShape.OPENAI)),
        ("/voices/register", "POST", RouteFacts(Body.UPLOAD)),
        ("/voices/alice", "DELETE", RouteFacts()),
        ("/v1/models", "GET", RouteFacts(errors=ErrorShape.OPENAI)),
        ("/v1/audio/voices", "GET", RouteFacts(errors=ErrorShape.OPENAI)),
        ("/health/live", "GET", RouteFacts(access=Access.OPEN)),
        ("/health/ready", "GET", RouteFacts(access=Access.OPEN)),
        ("/metrics", "GET", RouteFacts(access=Access.METRICS)),
        ("/", "GET", RouteFacts(access=Access.OPEN)),
        ("/v1/audio/speech/realtime", None, RouteFacts()),
        ("/nowhere", "GET", RouteFacts()),
    ],
)
def test_each_route_declares_its_facts(path, method, facts):
    assert facts_for(ROUTES, scope(path, method)) == facts


def test_the_open_paths_come_from_the_declarations():
    assert paths_where(ROUTES, lambda f: f.access is Access.OPEN) == {"/", "/health", "/health/ready", "/health/live"}


def test_the_openai_routes_declare_openais_error_shape():
    openai_paths = paths_where(ROUTES, lambda f: f.errors is ErrorShape.OPENAI)
    assert openai_paths == {"/v1/audio/speech", "/v1/models", "/v1/audio/voices"}  # not the realtime socket
