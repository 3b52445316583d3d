"""Retention of the channels plugin (its ``gateway_prune``): its event streams (the
lifecycle log and the channels' message streams) and stored messages by the
``[retention]`` event age and count, and the inbound delivery ids once no signed
timestamp could still carry them."""

from __future__ import annotations

from host.api import Settings, Store
from plugins.channels import routes
from plugins.channels.config import parse
from plugins.channels.store import messages
from plugins.channels.webchat import STREAM as WEBCHAT_STREAM

STREAMS = (routes.EVENTS, WEBCHAT_STREAM, "channel:webhook")


async def prune(store: Store, settings: Settings, now_ms: int, dry_run: bool) -> dict[str, int]:
    r = settings.retention
    cutoff = r.cutoff_ms(r.events_max_age_days, now_ms)
    events = 0
    for stream in STREAMS:
        events += await store.prune_stream(
            stream,
            before_ms=cutoff,
            keep_last=r.limit(r.events_max_count),
            batch_size=r.batch_size,
            dry_run=dry_run,
        )
    old = 0
    if cutoff is not None:
        where = messages.c.created_ms < cutoff
        old = (
            await store.count_where(messages, where)
            if dry_run
            else await store.delete_batched(messages, where, [messages.c.n], r.batch_size)
        )
    # A delivery id older than twice the timestamp window cannot come back signed.
    window_ms = int(parse(settings)[0].tolerance_seconds * 2000)
    deliveries = await store.prune_once_keys(
        "channels.webhook", now_ms - window_ms, r.batch_size, dry_run
    )
    return {"events": events, "messages": old, "deliveries": deliveries}
