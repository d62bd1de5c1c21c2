"""Optional API keys: `Authorization: Bearer <key>` (what OpenAI clients send as `api_key`), or
`xi-api-key: <key>` (what ElevenLabs clients send), on HTTP requests and WebSocket upgrades alike.

Keys come from TTS_API_KEYS, comma-separated, each either the key itself or `sha256:<hex>` of it
(so the config need not hold secrets). A presented key is hashed and compared with every
configured hash in constant time. Routes that declare themselves open (health probes, the web
page; /metrics unless told otherwise) answer anyone; everything else answers 401 without a valid
key, in the error shape of the route asked for (OpenAI's on the OpenAI routes, see http_errors.py).
"""

import hashlib
import hmac
import ipaddress
import logging
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.routing import BaseRoute
from starlette.types import ASGIApp

from chatterbox_server.server.context import RequestContext
from chatterbox_server.server.routes import Access, RouteFacts, facts_for

logger = logging.getLogger(__name__)

HASH_PREFIX = "sha256:"
# FastAPI's own documentation pages: not our routes, so they declare nothing; open, since they
# hold no data (the API calls made from them need keys)
DOC_PATHS = frozenset({"/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"})


class ApiKeys:
    """The configured keys, as sha256 digests."""

    def __init__(self, spec: str):
        self._digests: list[bytes] = []
        for entry in (part.strip() for part in spec.split(",")):
            if not entry:
                continue
            if entry.startswith(HASH_PREFIX):
                hex_digest = entry[len(HASH_PREFIX) :]
                try:
                    digest = bytes.fromhex(hex_digest)
                except ValueError:
                    digest = b""
                if len(digest) != hashlib.sha256().digest_size:
                    raise ValueError(f"api key {entry[:12]}...: sha256: must be followed by 64 hex digits")
                self._digests.append(digest)
            else:
                self._digests.append(hashlib.sha256(entry.encode()).digest())

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def __len__(self) -> int:
        return len(self._digests)

    def accepts(self, key: str | None) -> bool:
        """True if `key` is one of the configured keys (every key is compared, in constant time)."""
        if not key:
            return False
        presented = hashlib.sha256(key.encode(errors="surrogatepass")).digest()
        matched = False
        for digest in self._digests:
            matched |= hmac.compare_digest(presented, digest)
        return matched


def bearer_token(headers: Headers) -> str | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


XI_API_KEY_HEADER = "xi-api-key"  # where ElevenLabs clients (Pipecat, LiveKit, its SDKs) send their key


def presented_keys(headers: Headers) -> list[str]:
    """The keys a request presents: `Authorization: Bearer <key>` and ElevenLabs' `xi-api-key: <key>`."""
    keys = [bearer_token(headers), headers.get(XI_API_KEY_HEADER, "").strip()]
    return [key for key in keys if key]


def is_open(facts: RouteFacts, metrics_open: bool) -> bool:
    """Whether a route with these facts answers without a key."""
    return facts.access is Access.OPEN or (facts.access is Access.METRICS and metrics_open)


class ApiKeyMiddleware:
    """Refuses requests without a valid key (401) except on routes that declare themselves open
    (routes.py); marks keyed requests in the request context either way (so /health can show
    more to a keyed client)."""

    def __init__(
        self,
        app,
        keys: ApiKeys,
        routes: list[BaseRoute],
        respond: Callable[[], ASGIApp],
        metrics_open: bool = True,
        static_prefixes: tuple[str, ...] = (),
    ):
        self.app = app
        self.keys = keys
        self.routes = routes  # the API's routes, as declared
        self.respond = respond
        self.metrics_open = metrics_open
        self.static_prefixes = static_prefixes  # mounted assets (the docs' and the web page's): open

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        authenticated = self.keys.enabled and any(self.keys.accepts(key) for key in presented_keys(headers))
        RequestContext.of(scope).authenticated = authenticated
        if self.keys.enabled and not authenticated and not self._open(scope):
            return await self.respond()(scope, receive, send)
        return await self.app(scope, receive, send)

    def _open(self, scope) -> bool:
        path = scope["path"]
        if path in DOC_PATHS or path.startswith(self.static_prefixes) or scope.get("method") == "OPTIONS":
            return True
        return is_open(facts_for(self.routes, scope), self.metrics_open)


def is_loopback(host: str) -> bool:
    """Whether an address to listen on reaches this machine only (127.0.0.1, ::1, localhost)."""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, keys: ApiKeys) -> str | None:
    """A loud line when the server listens beyond loopback with no API keys."""
    if keys.enabled or is_loopback(host):
        return None
    return (
        f"SECURITY: listening on {host} with no API keys: anyone who can reach this port can synthesize, "
        "register and delete voices. Set TTS_API_KEYS (or bind --host 127.0.0.1)."
    )
