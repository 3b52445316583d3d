"""The hooks the OpenAI-compatible plugin declares, for other plugins to implement.
Provider authors import their types from ``plugins.openai_compat.contract``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from host.api import Register, hookspec, registry_hookspec

if TYPE_CHECKING:
    from quart import Quart


@registry_hookspec("providers", "provider")
def gateway_register_providers(register: Register) -> None:
    """Register model providers for the OpenAI-compatible surface and ``llm`` steps:
    ``register(name, provider)``.

    :param register: ``register(name: str, provider: contract.Provider)``.

    All implementations are called; a provider name registered twice fails start-up.
    """


@hookspec
def gateway_record_conversation(app: Quart, record: dict[str, Any]) -> Any:
    """Receive one model exchange of a conversation that has a session key (a Responses
    chain, or ``metadata.session_id``), to store it: the contract of the sessions plugin.

    :param app: the Quart app.
    :param record: a JSON-able dict: ``session_key``, ``api`` (``chat`` or
        ``responses``), ``model``, ``response_id``, ``previous_response_id``,
        ``principal``, ``owner`` (its key, ``host.api.owner_key``), ``user``,
        ``metadata``, ``instructions``, ``input`` and ``output`` (chat messages),
        ``usage``, ``status``, ``created_ms``.

    Awaitable. Called only for exchanges the model answered, before the answer's end
    reaches the client (before ``[DONE]`` for streams). All implementations are called;
    exceptions are logged and never reach the client.
    """
