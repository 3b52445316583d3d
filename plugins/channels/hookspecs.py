"""The hook the channels plugin declares. Channels implement
``plugins.channels.contract.Channel``."""

from __future__ import annotations

from host.api import Register, registry_hookspec


@registry_hookspec("channels", "channel")
def gateway_register_channels(register: Register) -> None:
    """Register channels (connectors to the outside): ``register(name, channel)``.

    :param register: ``register(name: str, channel: contract.Channel)``.

    All implementations are called; a channel registered twice fails start-up. Its
    lifecycle is driven by ``POST /gateway/channels/{name}/lifecycle``.
    """
