"""Optional API keys: `Authorization: Bearer <key>` (what OpenAI clients send as `api_key`).

Keys come from TTS_API_KEYS, comma-separated, each either the key itself or `sha256:<hex>` of it
(so the config need not hold secrets). A presented key is hashed and compared with every
configured hash in constant time. Health probes (and /metrics unless told otherwise) stay open;
everything else answers 401 in our error shape without a valid key.
"""

import hashlib
import hmac
import ipaddress
import logging
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.responses import Response

logger = logging.getLogger(__name__)

HASH_PREFIX = "sha256:"
OPEN_PATHS = frozenset({"/health/live", "/health/ready", "/health"})
DOC_PATHS = frozenset({"/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"})
DOC_PREFIXES = ("/static-offline-docs/",)
PAGE_PATHS = frozenset({"/"})  # the web page and its assets need no key (its API calls do)
PAGE_PREFIXES = ("/ui/",)


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


class ApiKeyMiddleware:
    """Refuses requests without a valid key (401) except on open paths; marks keyed requests in
    scope["state"]["authenticated"] either way (so /health can show more to a keyed client)."""

    def __init__(self, app, keys: ApiKeys, respond: Callable[[], Response], metrics_open: bool = True):
        self.app = app
        self.keys = keys
        self.respond = respond
        self.open_paths = OPEN_PATHS | DOC_PATHS | ({"/metrics"} if metrics_open else set())

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        authenticated = self.keys.enabled and self.keys.accepts(bearer_token(Headers(scope=scope)))
        scope.setdefault("state", {})["authenticated"] = authenticated
        path = scope["path"]
        is_open = (
            path in self.open_paths
            or path in PAGE_PATHS
            or path.startswith(DOC_PREFIXES + PAGE_PREFIXES)
            or scope.get("method") == "OPTIONS"
        )
        if self.keys.enabled and not authenticated and not is_open:
            return await self.respond()(scope, receive, send)
        return await self.app(scope, receive, send)


def exposure_warning(host: str, keys: ApiKeys) -> str | None:
    """A loud line when the server listens beyond loopback with no API keys."""
    if keys.enabled:
        return None
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return None
    return (
        f"SECURITY: listening on {host} with no API keys: anyone who can reach this port can synthesize, "
        "register and delete voices. Set TTS_API_KEYS (or bind --host 127.0.0.1)."
    )
