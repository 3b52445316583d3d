"""The agents plugin's exceptions, apart from the runtimes (which import the ACP package:
its import costs start-up time, paid when the first agent starts)."""

from __future__ import annotations


class AgentStartError(Exception):
    """The agent could not be started or would not open its session."""
