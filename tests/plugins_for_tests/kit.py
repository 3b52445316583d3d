"""Build plugin objects in a test from plain functions: ``Plugin(gateway_status=fn)``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from host.api import hookimpl


class Plugin:
    """A plugin whose hook implementations are the keyword arguments, by hook name."""

    def __init__(self, **hooks: Callable[..., Any]) -> None:
        for name, fn in hooks.items():
            setattr(self, name, hookimpl(fn))


REPO_ROOT = Path(__file__).resolve().parents[2]


def fake_distribution(site: Path, name: str, entry_points: dict[str, str]) -> Path:
    """Write ``<site>/<name>-0.1.dist-info`` declaring ``agent_gateway`` entry points, so a
    process with ``site`` on ``sys.path`` sees an installed plugin distribution."""
    info = site / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = ["[agent_gateway]", *(f"{ep} = {target}" for ep, target in entry_points.items())]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return site


def subprocess_env(*paths: Path, **extra: str) -> dict[str, str]:
    """The current environment with ``paths`` and the repository first on PYTHONPATH and
    no GATEWAY_* variables unless given in ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), str(REPO_ROOT)])
    env.update(extra)
    return env
