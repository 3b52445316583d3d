"""``docs/reference/http.md`` lists exactly the routes the built-in app serves: a test over
the live URL map (and the host's own view of each route), not over another file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

import pytest

from host.app import HOST_PUBLIC_ENDPOINTS, create_app
from host.context import context

HTTP_MD = Path(__file__).resolve().parent.parent / "docs" / "reference" / "http.md"
HEADER = ["Method", "Path", "Auth", "Policy gate", "Plugin", "Description"]
NO_GATE = {"", "—", "-", "none"}


class Row(NamedTuple):
    method: str
    path: str
    auth: str
    gate: str | None
    plugin: str

    def markdown(self) -> str:
        gate = f"`{self.gate}`" if self.gate else "—"
        return f"| {self.method} | `{self.path}` | {self.auth} | {gate} | {self.plugin} | ... |"


def documented_rows(text: str) -> list[Row]:
    """Rows of every table whose header is ``HEADER``, in file order."""
    rows: list[Row] = []
    in_table = False
    for line in text.splitlines():
        if not line.startswith("|"):
            in_table = False
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells == HEADER:
            in_table = True
            continue
        if not in_table or set("".join(cells)) <= set("-: "):
            continue
        assert len(cells) == len(HEADER), f"malformed route row: {line}"
        method, path, auth, gate, plugin, description = (c.strip("`").strip() for c in cells)
        assert description, f"route row without a description: {line}"
        rows.append(
            Row(method, path, auth, None if gate.lower() in NO_GATE else gate, plugin.strip("`"))
        )
    return rows


def doc_path(rule: str) -> str:
    return re.sub(r"<(?:[^:<>]*:)?([^<>]+)>", r"{\1}", rule)


def served_rows(app) -> list[Row]:
    """What the app serves: every rule of the URL map, described by the host's RouteInfo
    (plugin, gate, public) or, for the host's own routes, by the host."""
    infos = {route.endpoint: route for route in context(app).routes}
    rows: list[Row] = []
    for rule in app.url_map.iter_rules():
        methods = sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
        if rule.endpoint in HOST_PUBLIC_ENDPOINTS:
            rows += [Row(m, doc_path(rule.rule), "public", None, "host") for m in methods]
            continue
        info = infos.get(rule.endpoint)
        assert info is not None, f"{rule.rule} ({rule.endpoint}) was not registered by a plugin"
        auth = "public" if info.public else "protected"
        for method in ["WS"] if info.websocket else methods:
            rows.append(Row(method, doc_path(rule.rule), auth, info.gate, info.plugin))
    return rows


@pytest.fixture
def built_in_app(make_settings):
    return create_app(make_settings(), load_entrypoints=False)


def test_http_reference_lists_exactly_the_served_routes(built_in_app):
    documented = documented_rows(HTTP_MD.read_text(encoding="utf-8"))
    served = served_rows(built_in_app)
    assert len(documented) == len(set(documented)), "a route is listed twice in http.md"
    missing = sorted(set(served) - set(documented))
    stale = sorted(set(documented) - set(served))
    message = ["docs/reference/http.md differs from the app's URL map."]
    if missing:
        message += ["Add (or fix) these rows:", *(row.markdown() for row in missing)]
    if stale:
        message += ["Remove (or fix) these rows:", *(row.markdown() for row in stale)]
    assert not missing and not stale, "\n".join(message)


def test_http_reference_groups_routes_by_plugin():
    text = HTTP_MD.read_text(encoding="utf-8")
    sections = re.split(r"^## ", text, flags=re.MULTILINE)[1:]
    grouped = 0
    for section in sections:
        heading, _, body = section.partition("\n")
        for row in documented_rows(body):
            assert row.plugin == heading.strip(), f"{row.method} {row.path} is under ## {heading}"
            grouped += 1
    assert grouped == len(documented_rows(text))


def test_parser_reads_gates_websockets_and_flags_bad_rows():
    table = "\n".join(
        [
            "| " + " | ".join(HEADER) + " |",
            "| --- | --- | --- | --- | --- | --- |",
            "| POST | `/a/{id}` | protected | `allow_x` | demo | Does a. |",
            "| WS | `/a/ws` | protected | — | demo | Socket. |",
            "",
            "| Status | Codes | When |",
            "| 400 | `x` | y |",
        ]
    )
    assert documented_rows(table) == [
        Row("POST", "/a/{id}", "protected", "allow_x", "demo"),
        Row("WS", "/a/ws", "protected", None, "demo"),
    ]
    with pytest.raises(AssertionError, match="without a description"):
        documented_rows(table.replace("Socket.", ""))


def test_public_routes_are_few_and_documented_as_public(built_in_app):
    documented = documented_rows(HTTP_MD.read_text(encoding="utf-8"))
    public = {(row.method, row.path) for row in documented if row.auth == "public"}
    served_public = {(r.method, r.path) for r in served_rows(built_in_app) if r.auth == "public"}
    assert public == served_public
    assert ("GET", "/openapi.json") in public and ("GET", "/health") in public
    assert ("WS", "/gateway/ws") not in public
