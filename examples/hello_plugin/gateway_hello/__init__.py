"""Hooks of the example plugin. Routes live in ``routes.py``."""

from __future__ import annotations

from typing import Any

from host.api import hookimpl

from gateway_hello import routes


@hookimpl
def gateway_register_blueprints(register: Any) -> None:
    register(routes.bp)


@hookimpl
def gateway_register_policy_gates(register: Any) -> None:
    register(routes.GATE, "leave greetings in the hello plugin's guest book")


@hookimpl
def gateway_status(app: Any) -> dict[str, Any]:
    return {"greetings": len(routes.guest_book(app))}
