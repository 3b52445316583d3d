"""The training plugin's policy gates (registered with their descriptions in
``__init__.py``). Rollouts belong to the principal whose run or conversation they record;
the read-all and act-all gates reach everyone's."""

from __future__ import annotations

GATE_FEEDBACK = "allow_training_feedback"
GATE_CONFIG = "allow_training_config"
GATE_EXPORT = "allow_training_export"
GATE_READ_ALL = "allow_training_read_all"
GATE_ACT_ALL = "allow_training_act_all"

GATES: dict[str, str] = {
    GATE_FEEDBACK: "add a reward or human feedback to a rollout (one's own; others' with "
    "allow_training_act_all)",
    GATE_CONFIG: "change what the gateway collects for training (PATCH /gateway/training/config)",
    GATE_EXPORT: "export the rollouts one may read as a JSONL fine-tuning dataset and hand it "
    "to trainer plugins",
    GATE_READ_ALL: "read every principal's rollouts and exports",
    GATE_ACT_ALL: "add feedback to every principal's rollouts",
}
