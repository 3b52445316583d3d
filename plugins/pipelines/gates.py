"""The pipelines plugin's policy gates (registered with their descriptions in
``__init__.py``)."""

from __future__ import annotations

GATE_RUN = "allow_pipeline_run"
GATE_APPROVE = "allow_pipeline_approve"
# Ownership (``require_owner``, ``owned_by`` in host.api): runs, schedules and breakpoints
# are their creator's; these gates read and act on everyone's.
GATE_READ_ALL = "allow_pipeline_read_all"
GATE_ACT_ALL = "allow_pipeline_act_all"
