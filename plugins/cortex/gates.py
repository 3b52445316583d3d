"""The cortex plugin's policy gate (registered with its description in ``__init__.py``)."""

from __future__ import annotations

GATE_CHAT = "allow_cortex_chat"
