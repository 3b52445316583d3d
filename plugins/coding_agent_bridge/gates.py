"""The bridge's policy gates (registered with their descriptions in ``__init__.py``)."""

from __future__ import annotations

GATE_WRITE = "allow_bridge_write"
# Ownership (host.api ``require_owner``, ``owned_by``): a bridge session is its opener's;
# these gates read and act on everyone's.
GATE_READ_ALL = "allow_bridge_read_all"
GATE_ACT_ALL = "allow_bridge_act_all"
