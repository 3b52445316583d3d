"""The agents plugin's policy gates (registered with their descriptions in
``__init__.py``)."""

from __future__ import annotations

GATE_WRITE = "allow_agent_sessions"
# Ownership (host.api ``require_owner``, ``owned_by``): an agent session is its opener's
# (a pipeline's ``agent`` step: its run's owner's); these gates read and act on everyone's.
GATE_READ_ALL = "allow_agent_read_all"
GATE_ACT_ALL = "allow_agent_act_all"
