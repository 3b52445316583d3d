"""Response conversion without per-request schema building.

quart-schema wraps ``app.make_response`` and, for every dict or list a view returns,
builds a new pydantic ``TypeAdapter(type(value))`` to dump it; building an adapter costs
far more than using one (pydantic's docs: build once, reuse). This keeps one adapter per
container type and dumps exactly as quart-schema would; a response object is returned as
it is (as Quart does, without quart-schema's checks of what it might be); anything else
(models, tuples, strings) still takes quart-schema's path.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter
from quart import Quart, Response
from werkzeug.wrappers import Response as WerkzeugResponse

_RESPONSES = (Response, WerkzeugResponse)


def install_cached_conversion(app: Quart) -> None:
    converting = app.make_response
    plain = getattr(converting, "__wrapped__", None)  # Quart's own, kept by functools.wraps
    if plain is None:
        return
    adapters: dict[type, TypeAdapter[Any]] = {dict: TypeAdapter(dict), list: TypeAdapter(list)}
    config = app.config

    async def make_response(result: Any) -> Any:
        if isinstance(result, _RESPONSES):
            return result  # a response already (quart-schema would only check it)
        value, rest = (result[0], result[1:]) if type(result) is tuple and result else (result, ())
        adapter = adapters.get(type(value))
        if (
            adapter is None
            or config["QUART_SCHEMA_CONVERT_CASING"]
            or config.get("QUART_SCHEMA_CONVERSION_PREFERENCE") == "msgspec"
        ):
            return await converting(result)
        dumped = adapter.dump_python(
            value, **(config.get("QUART_SCHEMA_PYDANTIC_DUMP_OPTIONS") or {})
        )
        return await plain((dumped, *rest) if rest else dumped)

    app.make_response = make_response  # type: ignore[method-assign]
