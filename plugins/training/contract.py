"""What other plugins call: the :class:`TrainingAPI` service (``service(TrainingAPI)``),
``/gateway/training``'s status, rollouts, collection settings and feedback for a
principal, with the routes' ownership and gates."""

from __future__ import annotations

from typing import Any

from host.api import Principal
from plugins.training.models import ConfigResponse, RolloutList, RolloutRecord, TrainingStatus


class TrainingAPI:
    """A plain base class, so ``service(TrainingAPI)`` type-checks; the training plugin
    provides the implementation. Errors are ``host.api.GatewayError`` as the routes."""

    async def status(self, principal: Principal) -> TrainingStatus:
        """``GET /gateway/training/status`` for ``principal``."""
        raise NotImplementedError

    async def rollouts(self, principal: Principal, limit: int = 50) -> RolloutList:
        """The newest rollouts ``principal`` may read (everyone's with
        ``allow_training_read_all``)."""
        raise NotImplementedError

    async def change_config(self, principal: Principal, changes: dict[str, Any]) -> ConfigResponse:
        """``PATCH /gateway/training/config`` (``allow_training_config``: 403)."""
        raise NotImplementedError

    async def feedback(
        self, principal: Principal, rollout_id: str, body: dict[str, Any]
    ) -> RolloutRecord:
        """``POST /gateway/training/rollouts/{id}/feedback`` (``allow_training_feedback``:
        403; another's rollout 404, or 403 without ``allow_training_act_all``)."""
        raise NotImplementedError


__all__ = ["TrainingAPI"]
