"""The dashboard's policy gates. Pausing and resuming from the dashboard need the
control plugin's ``allow_gateway_control``, as ``POST /gateway/pause`` does; approving
from the page needs the pipelines' approve gate (checked by the pipelines service)."""

GATE_ACT = "allow_dashboard_act"  # acknowledge alerts
GATE_CONTROL = "allow_gateway_control"
# The sessions plugin's write gates (seed 004): its forms keep the gates of its APIs.
GATE_SESSION_WRITE = "allow_session_write"
GATE_MEMORY_WRITE = "allow_memory_write"
