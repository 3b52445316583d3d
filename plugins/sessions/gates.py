"""The plugin's policy gates (seed 004's two write gates, and the operators' read-all and
act-all gates of the session family, which cover the sessions' memory too)."""

GATE_SESSION_WRITE = "allow_session_write"
GATE_MEMORY_WRITE = "allow_memory_write"
GATE_READ_ALL = "allow_session_read_all"
GATE_ACT_ALL = "allow_session_act_all"
