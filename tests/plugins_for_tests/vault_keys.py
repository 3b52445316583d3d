"""A plugin that declares secret keys whose names do not look secret: ``unlock`` in its
own section, ``seed`` in each table of a top-level ``[vault.<name>]``."""

from __future__ import annotations

from typing import Any

from host.api import hookimpl


@hookimpl
def gateway_register_secret_keys(register: Any) -> None:
    register("plugins.vault.unlock", "the vault's unlock phrase")
    register("vault.*.seed", "the seed of each vault")
