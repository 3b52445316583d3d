"""The hook the training plugin declares, for trainer plugins to implement."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from host.api import hookspec

if TYPE_CHECKING:
    from quart import Quart


@hookspec
def gateway_training_batch(
    app: Quart, export: dict[str, Any], batch: list[dict[str, Any]], index: int, last: bool
) -> Any:
    """Receive one batch of an export (``POST /gateway/training/exports``) to train on.

    :param app: the Quart app.
    :param export: ``id``, ``file`` (the JSONL dataset's final path), ``filters``,
        ``created_by``, ``created_ms``.
    :param batch: up to ``export_batch_size`` items, oldest first, each ``rollout_id``,
        ``source``, ``outcome``, ``model``, ``reward``, ``feedback`` and ``line`` (the
        dataset's line: ``{"messages": [...], "tools": [...]}``, OpenAI's fine-tuning
        chat format).
    :param index: the batch's position in the export, from 0.
    :param last: True for the export's final batch, handed over just before the dataset
        file is put in place.

    Awaitable. All implementations are called, batch after batch, while the dataset is
    written. An exception fails the export: the dataset is not kept and no later batch
    (nor a ``last`` one) follows, so a trainer should start training only at ``last``.
    """
