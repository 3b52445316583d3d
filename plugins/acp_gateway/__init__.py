"""Built-in ``acp_gateway`` plugin: the gateway as an ACP endpoint for remote editors
(``WS /acp``), relaying each editor to an agent of the agents plugin through its
``AgentSessions`` service. Written like a third-party plugin: hooks here, the route in
``routes.py``, the relay in ``relay.py``, the WebSocket framing in ``transport.py``."""

from __future__ import annotations

from quart import Quart

from host.api import Register, Settings, hookimpl
from plugins.acp_gateway import routes
from plugins.acp_gateway.config import problems


@hookimpl
def gateway_register_blueprints(register: Register, settings: Settings) -> None:
    register(routes.bp)


@hookimpl
async def gateway_shutdown(app: Quart) -> None:
    await routes.close_http_connections(app)


@hookimpl
def gateway_validate_config(app: Quart, settings: Settings) -> list[str]:
    return problems(settings)
