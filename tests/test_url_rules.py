"""The gateway's URL rules compile their URL builders on first use (start-up speed); URL
building and trailing-slash redirects must work as with Werkzeug's own rules."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from quart import Blueprint
from werkzeug.routing import RequestRedirect

from host.app import create_app
from host.settings import Settings
from host.url_rules import LazyBuilderRule


async def test_rules_build_urls_and_redirect_like_werkzeug(
    make_settings: Callable[..., Settings],
) -> None:
    app = create_app(make_settings(), load_entrypoints=False)
    assert app.url_rule_class is LazyBuilderRule
    probe = Blueprint("probe", __name__)

    @probe.get("/probe/<name>/items/")
    async def items(name: str) -> str:
        return name

    app.register_blueprint(probe)
    async with app.test_request_context("/"):
        assert app.url_for("probe.items", name="a b") == "/probe/a%20b/items/"
        assert app.url_for("probe.items", name="x", page=2) == "/probe/x/items/?page=2"
    adapter = app.url_map.bind("localhost")
    # Without the trailing slash Werkzeug redirects, building the target with the rule.
    with pytest.raises(RequestRedirect) as redirect:
        adapter.match("/probe/y/items", method="GET")
    assert redirect.value.new_url == "http://localhost/probe/y/items/"
