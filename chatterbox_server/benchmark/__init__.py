"""Load generation against a running server: the HTTP client, and the statistics it reports."""

from chatterbox_server.benchmark.client import DEFAULT_TEXTS, Bench, format_report
from chatterbox_server.benchmark.stats import RequestResult, find_max_concurrency, summarize, within_real_time

__all__ = [
    "DEFAULT_TEXTS",
    "Bench",
    "RequestResult",
    "find_max_concurrency",
    "format_report",
    "summarize",
    "within_real_time",
]
