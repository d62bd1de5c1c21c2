"""What each route declares about itself, next to its definition: its body limit, whether it is a
synthesis (counted in the synthesis metrics), who may call it without an API key, and the shape
its errors take (ours, or OpenAI's on the OpenAI-compatible routes). Which admission queues a
request waits in follows from the first two (`RouteFacts.queues`), so the middleware can refuse
it while they are full before its body is read.

    @router.post("/tts", ...)
    @route_facts(body=Body.UPLOAD, synthesis=True)
    async def tts(...): ...

The middleware reads these from the route a request matches (`facts_for`), so a new route states
its own facts and no table elsewhere needs to learn its path.
"""

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.routing import BaseRoute, Match
from starlette.types import Scope

F = TypeVar("F", bound=Callable[..., Any])

FACTS_ATTRIBUTE = "__route_facts__"


class Body(enum.Enum):
    """How large a request body the route accepts (sizes from the settings, see app.py)."""

    NONE = "none"  # no body worth bounding (GET, DELETE, a socket)
    UPLOAD = "upload"  # multipart with a reference clip (and a text, on a route that speaks)
    JSON = "json"  # a JSON object holding one text


class Queue(enum.Enum):
    """An admission queue (server/admission.py) a request may wait in."""

    SYNTHESIS = "synthesis"  # a synthesis slot: every request that speaks
    ENCODE = "encode"  # an encode slot: a reference clip decoded and encoded


class Access(enum.Enum):
    """Who may call the route when API keys are configured."""

    KEY = "key"  # a valid key
    OPEN = "open"  # anyone (health probes, the web page)
    METRICS = "metrics"  # anyone unless TTS_METRICS_REQUIRE_KEY


class ErrorShape(enum.Enum):
    """The JSON shape of the route's errors, from the exception handlers and the middleware alike
    (http_errors.py builds both)."""

    OURS = "ours"  # {"error": {"type", "message"}}
    OPENAI = "openai"  # OpenAI's {"error": {"message", "type", "param", "code"}}, so its clients read them


@dataclass(frozen=True)
class RouteFacts:
    body: Body = Body.NONE
    synthesis: bool = False  # speaks text: counted in tts_requests_total's synthesis outcomes
    access: Access = Access.KEY
    errors: ErrorShape = ErrorShape.OURS

    @property
    def queues(self) -> frozenset[Queue]:
        """The admission queues a request of the route waits in: a synthesis for a synthesis slot,
        an upload's clip for an encode slot (on a route that also speaks, only when the clip is
        there: `clip_optional`)."""
        queues = set()
        if self.synthesis:
            queues.add(Queue.SYNTHESIS)
        if self.body is Body.UPLOAD:
            queues.add(Queue.ENCODE)
        return frozenset(queues)

    @property
    def clip_optional(self) -> bool:
        """An upload route that speaks (/tts) takes a voice_id or a clip; one that does not
        (registration) is there for the clip."""
        return self.body is Body.UPLOAD and self.synthesis


DEFAULT_FACTS = RouteFacts()


def route_facts(
    body: Body = Body.NONE,
    synthesis: bool = False,
    access: Access = Access.KEY,
    errors: ErrorShape = ErrorShape.OURS,
) -> Callable[[F], F]:
    """Declare an endpoint's facts (put it under the router's decorator)."""

    def declare(endpoint: F) -> F:
        setattr(endpoint, FACTS_ATTRIBUTE, RouteFacts(body, synthesis, access, errors))
        return endpoint

    return declare


def facts_of(route: object) -> RouteFacts:
    """The facts of a matched route (`scope["route"]`), or the defaults for anything else."""
    endpoint = getattr(route, "endpoint", None)
    facts = getattr(endpoint, FACTS_ATTRIBUTE, None)
    return facts if isinstance(facts, RouteFacts) else DEFAULT_FACTS


def route_for(routes: Iterable[BaseRoute], scope: Scope) -> BaseRoute | None:
    """The route `scope` will be routed to (middleware runs before the router does); a path that
    matches with another method (a 405 to come) counts as that route; None for no route."""
    partial = None
    for candidate in routes:
        match, _ = candidate.matches(scope)
        if match is Match.FULL:
            return candidate
        if match is Match.PARTIAL and partial is None:
            partial = candidate
    return partial


def facts_for(routes: Iterable[BaseRoute], scope: Scope) -> RouteFacts:
    """The facts of the route `scope` will be routed to (`route_for`), or the defaults for none."""
    route = route_for(routes, scope)
    return facts_of(route) if route is not None else DEFAULT_FACTS


def paths_where(routes: Iterable[BaseRoute], keep: Callable[[RouteFacts], bool]) -> frozenset[str]:
    """The paths of the routes whose facts `keep` accepts (for the OpenAPI document)."""
    return frozenset(path for r in routes if (path := getattr(r, "path", None)) and keep(facts_of(r)))
