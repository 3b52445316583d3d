"""What another plugin imports from the audit plugin: the :class:`AuditLog` service
(``host.api.service(AuditLog)``) and the :class:`AuditRecord` it answers.

``await service(AuditLog).record("vault.key_rotated", target="key-7")`` stores one
record in the hash-chained log and returns it once it is committed. Within a request
the actor defaults to the caller (``Principal.key``). A plugin that would rather not
depend on the audit plugin publishes an event whose data carries an ``audit`` object
instead (see ``docs/reference/plugins.md``, "Audit records from events").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Where a record came from.
SOURCES = ("request", "auth", "safety", "approval", "config", "plugin", "retention")


@dataclass(frozen=True)
class AuditRecord:
    """One stored record of the chain."""

    seq: int
    ts_ms: int
    source: str
    action: str
    actor: str | None
    target: str | None
    outcome: str
    status: int | None
    reason_code: str | None
    request_id: str | None
    client: str | None
    method: str | None
    route: str | None
    detail: dict[str, Any] = field(default_factory=dict)
    prev_hash: str = ""
    hash: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class AuditLog:
    """The service's interface. A plain class rather than a ``typing.Protocol``, so that
    ``service(AuditLog)`` type-checks (mypy refuses a protocol where a concrete class is
    expected); the audit plugin's implementation subclasses it."""

    async def record(
        self,
        action: str,
        *,
        outcome: str = "success",
        target: str | None = None,
        reason_code: str | None = None,
        actor: str | None = None,
        detail: dict[str, Any] | None = None,
        source: str = "plugin",
    ) -> AuditRecord:
        """Store a record and return it once committed. ``action`` is a short dotted name
        (``vault.key_rotated``, at most 200 characters); ``outcome`` one word
        (``success``, ``denied``, ``failed``...); ``detail`` a JSON object. Within a
        request ``actor`` defaults to the caller's ``Principal.key``. Raises
        ``ValueError`` for an empty action or a detail that is not JSON."""
        raise NotImplementedError


__all__ = ["SOURCES", "AuditLog", "AuditRecord"]
