"""Where an agent's permission request is asked (``[agents.<id>] permissions``).

- ``queue``: an approval in the shared queue (``GET /approvals``, approve/deny there);
- ``editor``: the editor connected to the session at ``/acp`` is sent
  ``session/request_permission`` and its answer is the agent's; with no editor (a
  pipeline step, the bridge, ``/sessions``) or one that fails to answer, the queue;
- ``both`` (the default): the queue and the editor at once; the first decision wins.
  When the editor answers first the approval is resolved with its decision (approver
  ``editor:<principal>``); when the queue decides first the editor's request is
  withdrawn (``$/cancel_request``). A decision taken on both sides at once is decided
  once: resolving the approval is one conditional update, and whoever lost reads the
  winner's decision.

Every decision is on the session's stream (``permission.resolved`` with ``by``: policy,
editor or queue) with an ``audit`` object, so the audit log records who allowed what.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from plugins.pipelines.contract import ApprovalQueue

# An editor's answer: the option it chose, None when it cancelled; raises when it failed.
EditorAsk = Callable[[dict[str, Any], list[dict[str, Any]]], Awaitable[str | None]]


@dataclass
class Editor:
    """The editor a session's permission requests may be sent to."""

    principal: str
    ask: EditorAsk
    withdraw: Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Answer:
    option: str | None  # the option for the agent; None: refused (cancelled)
    decision: str  # approved, denied, timed_out, cancelled
    by: str  # editor, queue
    approver: str | None = None
    reason: str | None = None


def allows(options: list[dict[str, Any]], option: str | None) -> bool:
    kinds = {str(o.get("optionId")): o.get("kind") for o in options}
    return option is not None and str(kinds.get(option, "")).startswith("allow")


async def _editor(
    editor: Editor, tool_call: dict[str, Any], options: list[dict[str, Any]]
) -> Answer:
    option = await editor.ask(tool_call, options)
    decision = "approved" if allows(options, option) else "denied"
    return Answer(
        option, decision, "editor", f"editor:{editor.principal}", "answered in the editor"
    )


async def ask_editor_only(
    editor: Editor, tool_call: dict[str, Any], options: list[dict[str, Any]], timeout: float
) -> Answer | None:
    """The editor's answer; None when it failed or gave none within ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            return await _editor(editor, tool_call, options)
    except TimeoutError:
        with contextlib.suppress(Exception):
            await editor.withdraw(tool_call)
        return Answer(None, "timed_out", "editor", None, "no decision in time")
    except Exception:
        return None


async def race(
    queue: ApprovalQueue,
    approval_id: str,
    editor: Editor,
    tool_call: dict[str, Any],
    options: list[dict[str, Any]],
    timeout: float,
    choose: Callable[[bool], str | None],
) -> Answer:
    """The first of the editor's answer and the queue's decision on ``approval_id``."""
    asked = asyncio.ensure_future(_editor(editor, tool_call, options))
    waited = asyncio.ensure_future(queue.wait(approval_id, timeout))
    try:
        await asyncio.wait({asked, waited}, return_when=asyncio.FIRST_COMPLETED)
        if asked.done() and asked.exception() is None:
            answer = asked.result()
            if await queue.resolve(approval_id, answer.decision, answer.approver, answer.reason):
                return answer
        # The queue decided first (or at the same moment), or the editor failed.
        decision = await waited
        if not asked.done():
            with contextlib.suppress(Exception):
                await editor.withdraw(tool_call)
        return Answer(
            choose(decision.approved), decision.status, "queue", decision.approver, decision.reason
        )
    finally:
        for task in (asked, waited):
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
