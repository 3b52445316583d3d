"""What other plugins and pipeline authors import from the agents plugin.

- The :class:`AgentSessions` service (``host.api.service(AgentSessions)``): open an agent
  session, send it a prompt and await the turn (:class:`PromptOutcome`), close it; its
  events are on the stream ``stream_of(session_id)``. ``AGENT_GATE`` is the gate a
  principal needs to have an agent started for it. :class:`Editor`: an editor connected
  to a session (the ACP gateway), asked for the agent's permission requests.
- :func:`agent`: a pipeline step of kind ``agent`` (registered through the pipelines
  plugin's ``gateway_register_step_kinds``): runs a prompt on a configured agent.
"""

from __future__ import annotations

from plugins.agents.gates import GATE_WRITE as AGENT_GATE
from plugins.agents.permissions import Editor
from plugins.agents.service import AgentSessions, PromptOutcome, stream_of
from plugins.agents.step_kind import agent

__all__ = ["AGENT_GATE", "AgentSessions", "Editor", "PromptOutcome", "agent", "stream_of"]
