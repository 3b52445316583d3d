"""Declares the gate ``allow_weather_write``."""

from __future__ import annotations

from typing import Any

from host.api import hookimpl


@hookimpl
def gateway_register_policy_gates(register: Any) -> None:
    register("allow_weather_write", "change the weather")
