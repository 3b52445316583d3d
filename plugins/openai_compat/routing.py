"""Routing a model call over the model's deployments, then its fallbacks.

A model (``[models.<name>]``) has one or more deployments (``[[models.<name>.deployments]]``,
or the model's own ``base_url`` as its only one). A call picks the deployment with the
fewest calls in flight for its weight (ties broken at random by weight); one that fails
in a way another deployment may not (it refused the connection, answered 5xx or 429) is
cooled down for the model's ``cooldown_seconds`` (or the upstream's ``Retry-After``, when
longer) and the call goes to the next. When every deployment failed, the model's
``fallbacks`` are tried in order. A call counts as answered once its first chunk
arrived: nothing is retried after a byte could have reached the client.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from plugins.openai_compat.providers.base import ModelRoute, Provider, ProviderError

T = TypeVar("T")
_MAX_COOLDOWN = 3600.0


@dataclass
class Deployment:
    """One upstream of a model, and what the router knows of its health."""

    route: ModelRoute
    weight: float
    label: str
    in_flight: int = 0
    cooled_until: float = 0.0  # time.monotonic()
    failures: int = 0
    last_error: str | None = None

    def cooling(self, now: float) -> bool:
        return self.cooled_until > now

    def status(self, now: float) -> dict[str, Any]:
        return {
            "deployment": self.label,
            "base_url": self.route.base_url,
            "upstream_model": self.route.upstream_model,
            "weight": self.weight,
            "in_flight": self.in_flight,
            "healthy": not self.cooling(now),
            "cooldown_remaining_seconds": round(max(0.0, self.cooled_until - now), 3),
            "failures": self.failures,
            "last_error": self.last_error,
        }


@dataclass
class Plan:
    """A model's deployments, how long a failed one rests, and its fallbacks."""

    name: str
    provider: Provider
    deployments: list[Deployment]
    cooldown_seconds: float = 30.0
    fallbacks: tuple[str, ...] = ()
    rng: random.Random = field(default_factory=random.Random)

    def order(self, now: float) -> list[Deployment]:
        """The deployments not cooling down, best first: fewest calls in flight, ties
        drawn at random in proportion to weight."""
        ready = [d for d in self.deployments if not d.cooling(now)]
        if len(ready) <= 1:
            return ready
        # Efraimidis-Spirakis keys: sorting by u ** (1 / w) draws in proportion to weight.
        keyed = [(d.in_flight, -(self.rng.random() ** (1 / d.weight)), d) for d in ready]
        keyed.sort(key=lambda k: (k[0], k[1]))
        return [k[2] for k in keyed]


def retryable(exc: ProviderError) -> bool:
    """A failure that says nothing about the request, only about the deployment: it could
    not be reached, or answered 5xx, or 429."""
    if exc.code == "upstream_unavailable":
        return True
    status = exc.upstream_status
    return status is not None and (status >= 500 or status == 429)


def _retry_after(exc: ProviderError) -> float:
    try:
        seconds = float(exc.retry_after or 0)
    except ValueError:
        return 0.0
    return seconds if math.isfinite(seconds) and seconds > 0 else 0.0


Observer = Callable[[str, Deployment, str], None]  # (model, deployment, event)


class Router:
    """The plans of every catalog model, and the calls in flight on them."""

    def __init__(self, plans: dict[str, Plan], observe: Observer | None = None) -> None:
        self.plans = plans
        self.observe = observe

    def status(self) -> dict[str, list[dict[str, Any]]]:
        now = time.monotonic()
        plans = sorted(self.plans.items())
        return {name: [d.status(now) for d in plan.deployments] for name, plan in plans}

    def _candidates(self, name: str) -> list[tuple[Plan, Deployment]]:
        now = time.monotonic()
        plan = self.plans[name]
        out = [(plan, d) for d in plan.order(now)]
        for fallback in plan.fallbacks:
            other = self.plans.get(fallback)
            if other is not None:
                out += [(other, d) for d in other.order(now)]
        if not out:
            # Everything rests: the deployment whose cool-down ends first is still
            # better than no answer.
            soonest = min(plan.deployments, key=lambda d: d.cooled_until)
            out = [(plan, soonest)]
        return out

    async def run(
        self,
        name: str,
        attempt: Callable[[str, ModelRoute, Provider], Awaitable[T]],
        release: Callable[[Callable[[], None]], None] | None = None,
    ) -> tuple[T, str]:
        """``attempt(model, route, provider)`` on each candidate until one answers;
        returns its result and the name of the model that answered. A failure that is
        not :func:`retryable` is raised at once; when all fail, the last failure is.
        ``release``: the call stays in flight until the callable given to it is called
        (a stream, until it ends); without it, until ``attempt`` returns."""
        last: ProviderError | None = None
        for plan, deployment in self._candidates(name):
            deployment.in_flight += 1
            try:
                result = await attempt(plan.name, deployment.route, plan.provider)
            except ProviderError as exc:
                if not retryable(exc):
                    raise
                self._cool(plan, deployment, exc)
                last = exc
                continue
            finally:
                deployment.in_flight -= 1
            # Answered; a stream stays in flight until it is released.
            deployment.last_error = None
            if release is not None:
                deployment.in_flight += 1
                release(_leaver(deployment))
            if self.observe is not None:
                self.observe(plan.name, deployment, "ok")
            return result, plan.name
        assert last is not None
        raise last

    def _cool(self, plan: Plan, deployment: Deployment, exc: ProviderError) -> None:
        seconds = min(_MAX_COOLDOWN, max(plan.cooldown_seconds, _retry_after(exc)))
        deployment.cooled_until = time.monotonic() + seconds
        deployment.failures += 1
        status = exc.upstream_status
        deployment.last_error = exc.code if status is None else f"upstream answered {status}"
        if self.observe is not None:
            self.observe(plan.name, deployment, "failed")


def _leaver(deployment: Deployment) -> Callable[[], None]:
    """What ends a held call on ``deployment``; once, however often it is called."""
    done = False

    def leave() -> None:
        nonlocal done
        if not done:
            done = True
            deployment.in_flight -= 1

    return leave
