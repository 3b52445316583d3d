"""What another plugin imports from the sessions plugin: nothing else of it is public.

- The :class:`SessionsService` service (``host.api.service(SessionsService)``): read and
  append sessions, read and write memory, from Python. Every method names the owner (a
  principal key, ``host.api.owner_key(principal)``; ``pipeline:<id>`` and the like for
  what no principal owns): the service trusts its caller, the HTTP routes check who may
  name whom.
- Memory rankers (``gateway_register_memory_rankers``): an object with
  ``async score(query, candidates) -> Sequence[float] | None`` (see :class:`MemoryRanker`).
- Pipeline steps: :func:`session_step` and :func:`memory_step` build the ``session`` and
  ``memory`` step kinds' steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from plugins.sessions.models import (
    MemoryEntryRecord,
    MemoryEntryRequest,
    MemoryGraph,
    MemoryQuery,
    MemoryView,
    MessageRecord,
    SessionDetail,
    SessionList,
    SessionSummary,
)


@dataclass
class NewMessage:
    """A message to append: ``role`` one of system, user, assistant, tool."""

    role: str
    content: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MemoryCandidate:
    """An entry a ranker scores: its text (summary, facts, tags) and what the shipped
    ranking knows of it (``text_rank`` 0 to 1, 1 for the best full-text match)."""

    entry_id: str
    session_id: str
    text: str
    memory_type: str
    importance: float
    text_rank: float


class MemoryRanker(Protocol):
    async def score(
        self, query: str, candidates: Sequence[MemoryCandidate]
    ) -> Sequence[float] | None:
        """A score from 0 to 1 for each candidate, in order (similarity of embeddings,
        say), added to the blend times ``ranker_weight``; None to abstain."""
        ...


class SessionsService:
    """Sessions and memory for other plugins (the sessions plugin provides the
    implementation; a plain base class, so ``service(SessionsService)`` type-checks).
    Errors are ``host.api.GatewayError``:
    404 ``session_not_found`` / ``memory_entry_not_found``, 400 ``invalid_session_key``,
    400 ``content_blocked`` (a safety scanner), 413 ``content_too_large``."""

    async def append(
        self,
        owner: str,
        session_key: str,
        items: Sequence[NewMessage],
        *,
        source: str = "api",
        parent_id: str | None = None,
    ) -> tuple[list[MessageRecord], SessionSummary]:
        """Append ``items`` in order under the head (or ``parent_id``), creating the
        session; each is safety-scanned first. Committed when it returns."""
        raise NotImplementedError

    async def session(self, owner: str, session_key: str) -> SessionDetail:
        """The session with its current conversation and its first stored messages."""
        raise NotImplementedError

    async def conversation(self, owner: str, session_key: str) -> list[MessageRecord]:
        """The current conversation, root to head."""
        raise NotImplementedError

    async def list_sessions(self, owner: str, limit: int = 50, offset: int = 0) -> SessionList:
        """``owner``'s sessions, by last activity, newest first."""
        raise NotImplementedError

    async def branch_session(
        self, owner: str, session_key: str, at: str | None = None, new_key: str | None = None
    ) -> SessionDetail:
        """A new session of ``owner`` holding the conversation up to message ``at`` (the
        head by default); 409 ``session_exists`` when ``new_key`` is taken."""
        raise NotImplementedError

    async def reset(self, owner: str, session_key: str) -> SessionSummary:
        """Start the conversation afresh (the messages stay, as an earlier branch)."""
        raise NotImplementedError

    async def put_memory(
        self, owner: str, session_key: str, entry_id: str, entry: MemoryEntryRequest
    ) -> tuple[MemoryEntryRecord, bool]:
        """Create (True) or replace (False) a memory entry."""
        raise NotImplementedError

    async def memory_entry(self, owner: str, session_key: str, entry_id: str) -> MemoryEntryRecord:
        """One entry (counted as an access)."""
        raise NotImplementedError

    async def delete_memory(self, owner: str, session_key: str, entry_id: str) -> None:
        """Soft-delete an entry (restorable)."""
        raise NotImplementedError

    async def search_memory(self, owner: str, session_key: str, query: MemoryQuery) -> MemoryView:
        """The document and the entries, ranked by ``query.query`` when it has words."""
        raise NotImplementedError

    async def put_document(self, owner: str, session_key: str, document: str) -> MemoryView:
        """Replace the session's free-text memory document."""
        raise NotImplementedError

    async def memory_graph(self, owner: str, session_key: str, max_nodes: int = 200) -> MemoryGraph:
        """The entries and their relations as nodes and edges."""
        raise NotImplementedError


def session_step(step_id: str, op: str, session_key: Any, **config: Any) -> Any:
    """A ``session`` step: ``op`` ``append`` (``role``, ``content``), ``read`` or
    ``reset``; ``session_key``, ``role`` and ``content`` may be functions of the step
    context. The session is owned by the run's owner."""
    from plugins.pipelines.contract import Step

    options = {k: config.pop(k) for k in list(config) if k in _STEP_OPTIONS}
    return Step(step_id, "session", {"op": op, "session_key": session_key, **config}, **options)


def memory_step(step_id: str, op: str, session_key: Any, **config: Any) -> Any:
    """A ``memory`` step: ``op`` ``put`` (``entry_id``, ``entry``: a dict of the entry's
    fields), ``get`` (``entry_id``), ``delete`` (``entry_id``), ``search`` (``query``,
    ``limit``, filters) or ``document`` (``document``); any value may be a function of the
    step context."""
    from plugins.pipelines.contract import Step

    options = {k: config.pop(k) for k in list(config) if k in _STEP_OPTIONS}
    return Step(step_id, "memory", {"op": op, "session_key": session_key, **config}, **options)


_STEP_OPTIONS = {
    "retries",
    "backoff_seconds",
    "timeout_seconds",
    "when",
    "continue_on_error",
    "description",
}

__all__ = [
    "MemoryCandidate",
    "MemoryEntryRecord",
    "MemoryEntryRequest",
    "MemoryGraph",
    "MemoryQuery",
    "MemoryRanker",
    "MemoryView",
    "MessageRecord",
    "NewMessage",
    "SessionDetail",
    "SessionList",
    "SessionSummary",
    "SessionsService",
    "memory_step",
    "session_step",
]
