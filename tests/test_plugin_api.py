"""The public plugin API stays the only way in: every module under ``plugins/`` and
``examples/`` imports the host through ``host.api`` alone and other plugins through their
``contract`` modules alone, and docs/reference/plugins.md lists exactly what ``host.api``
exports and which services the built-in plugins provide."""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import host.api
from host.api import context
from host.services import service_name
from tests.conftest import running_app

REPO = Path(__file__).resolve().parents[1]
PLUGINS_DOC = REPO / "docs" / "reference" / "plugins.md"


def imported_modules(source: str) -> Iterator[tuple[int, str]]:
    """(line, dotted module) of every absolute import, nested ones included;
    ``from a.b import c`` counts as ``a.b.c`` when ``a.b`` is a package of ours."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "host" or re.fullmatch(r"plugins\.\w+", node.module):
                for alias in node.names:
                    yield node.lineno, f"{node.module}.{alias.name}"
            else:
                yield node.lineno, node.module


def violations(source: str, plugin: str | None) -> list[str]:
    """What a module of ``plugin`` (None: an example, a third party) may not import."""
    found = []
    for line, module in imported_modules(source):
        parts = module.split(".")
        if parts[0] == "host" and module != "host.api" and not module.startswith("host.api."):
            found.append(f"line {line}: {module} (import the host through host.api)")
        elif parts[0] == "plugins" and len(parts) > 1 and parts[1] != plugin:
            if parts[2:] != ["contract"] and parts[2:3] != ["contract"]:
                found.append(f"line {line}: {module} (import another plugin's contract module)")
    return found


def plugin_modules() -> list[tuple[Path, str | None]]:
    found: list[tuple[Path, str | None]] = []
    for path in sorted((REPO / "plugins").rglob("*.py")):
        parts = path.relative_to(REPO / "plugins").parts
        found.append((path, parts[0] if len(parts) > 1 else None))
    found += [(path, None) for path in sorted((REPO / "examples").rglob("*.py"))]
    return found


def test_plugins_and_examples_import_the_host_only_through_host_api():
    modules = plugin_modules()
    assert len(modules) > 40  # the walk found the plugins and the examples
    problems = {
        str(path.relative_to(REPO)): found
        for path, plugin in modules
        if (found := violations(path.read_text(), plugin))
    }
    assert problems == {}


def test_the_import_check_catches_host_internals_and_other_plugins_internals():
    source = (
        "from host.settings import Settings\n"
        "import host.storage\n"
        "from host import errors\n"
        "from host.api import hookimpl\n"
        "def later():\n"
        "    from plugins.pipelines.engine import StepContext\n"
        "    from plugins.pipelines.contract import StepError\n"
        "    from plugins.openai_compat import contract\n"
        "    from plugins.weather import routes\n"
    )
    assert violations(source, "weather") == [
        "line 1: host.settings (import the host through host.api)",
        "line 2: host.storage (import the host through host.api)",
        "line 3: host.errors (import the host through host.api)",
        "line 6: plugins.pipelines.engine (import another plugin's contract module)",
    ]
    assert violations(source, None)[-1] == (
        "line 9: plugins.weather.routes (import another plugin's contract module)"
    )


def _section(title: str) -> str:
    """The text of plugins.md from the ``## <title>`` heading to the next one."""
    text = PLUGINS_DOC.read_text()
    start = text.index(f"## {title}")
    return text[start : text.index("\n## ", start)]


def _imports_table_names() -> set[str]:
    names: set[str] = set()
    for line in _section("Imports: `host.api`").splitlines():
        if line.startswith("| `"):
            first_column = line.split("|")[1]
            names |= set(re.findall(r"`(\w+)", first_column))
    return names


def test_every_host_api_name_is_documented_and_nothing_else():
    assert _imports_table_names() == set(host.api.__all__)


def _services_table() -> dict[str, tuple[str, str]]:
    """``{service name: (plugin, import module)}`` of the services table."""
    rows = re.findall(
        r"^\| `(\w+)` \| `(\w+)` \| `([\w.]+)` \|", _section("Services"), re.MULTILINE
    )
    return {name: (plugin, module) for name, plugin, module in rows}


@pytest.mark.parametrize("row", sorted(_services_table()))
def test_every_documented_service_is_importable_from_its_contract_module(row):
    _plugin, module = _services_table()[row]
    assert module.endswith(".contract")
    assert isinstance(getattr(importlib.import_module(module), row), type)


async def test_the_services_table_lists_what_the_built_in_plugins_provide(make_settings):
    documented = {
        service_name(getattr(importlib.import_module(module), name)): plugin
        for name, (plugin, module) in _services_table().items()
    }
    async with running_app(make_settings()) as (app, _client):
        provided = context(app).services.providers()
    assert documented == provided
    assert len(provided) >= 2
