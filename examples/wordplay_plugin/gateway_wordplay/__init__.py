"""The wordplay plugin's hooks: a provider for the openai_compat plugin, a step kind and a
pipeline for the pipelines plugin, and a route of its own that uses both plugins'
services. Those hooks are declared by the two plugins (``plugins/*/hookspecs.py``); with
one of them disabled its hooks are simply not called here.

It imports nothing of the gateway but ``host.api`` and the two plugins' contract modules.
"""

from __future__ import annotations

from gateway_wordplay import provider, routes, steps
from host.api import Register, hookimpl


@hookimpl
def gateway_register_providers(register: Register) -> None:
    register(provider.NAME, provider.ReverseProvider())


@hookimpl
def gateway_register_step_kinds(register: Register) -> None:
    register(steps.KIND, steps.WordCount())


@hookimpl
def gateway_register_pipelines(register: Register) -> None:
    register(steps.COUNT_WORDS.id, steps.COUNT_WORDS)


@hookimpl
def gateway_register_blueprints(register: Register) -> None:
    register(routes.bp)
