"""Graceful drain, the way a load balancer expects it: stop looking ready, keep listening, turn new
work away with 503 + Retry-After, and let the work in flight finish within the grace period."""

import asyncio
import logging

from chatterbox_server.server.state import ServerState

logger = logging.getLogger(__name__)


async def drain(state: ServerState, grace_s: float) -> bool:
    """Readiness turns 503 at once; new syntheses and registrations get 503 (ShuttingDownError);
    returns True when everything admitted finished within `grace_s`. Safe to call twice."""
    state.ready, state.draining = False, True
    state.admission.draining = state.encodes.draining = True  # before the first await: no request slips in
    running = state.admission.running + state.encodes.running
    if running:
        logger.info("draining: %d requests in flight, up to %g s to finish", running, grace_s)
    finished = all(await asyncio.gather(state.admission.drain(grace_s), state.encodes.drain(grace_s)))
    if not finished:
        logger.warning("shutdown grace of %g s ran out with work in flight", grace_s)
    return finished
