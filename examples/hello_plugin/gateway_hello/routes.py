"""A greeting (any authenticated caller) and a guest book (signing needs the plugin's gate)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from quart import Blueprint
from quart_schema import validate_request, validate_response

from gateway_hello import book
from host.api import context, current_principal, requires_gate

# Policy gates are named allow_<plugin>_<action>; the plugin declares it in
# gateway_register_policy_gates and operators grant it to tokens in gateway.toml.
GATE = "allow_hello_write"
bp = Blueprint("hello", __name__, url_prefix="/hello")


class Greeting(BaseModel):
    message: str


class GuestBookEntry(BaseModel):
    name: str = Field(..., min_length=1, max_length=100)


class SignedEntry(BaseModel):
    id: int
    name: str
    signed_by: str
    signed_ms: int


class GuestBook(BaseModel):
    entries: list[SignedEntry]


def greeting_word() -> str:
    """``[plugins.hello] greeting = "..."`` in gateway.toml; "hello" by default."""
    return str(context().settings.plugin_section("hello").get("greeting", "hello"))


@bp.get("/greet")
@validate_response(Greeting)
async def greet() -> Greeting:
    """Greet the caller by principal name."""
    return Greeting(message=f"{greeting_word()}, {current_principal().name}")


@bp.get("/guest-book")
@validate_response(GuestBook)
async def read_book() -> GuestBook:
    """The guest book, oldest entry first (the newest 100)."""
    rows = await book.entries(context().store)
    return GuestBook(entries=[SignedEntry(**row) for row in rows])


@bp.post("/guest-book")
@requires_gate(GATE)
@validate_request(GuestBookEntry)
@validate_response(SignedEntry, 201)
async def sign(data: GuestBookEntry) -> Any:
    """Sign the guest book (policy gate allow_hello_write)."""
    entry = await book.sign(context().store, data.name, current_principal().name)
    return SignedEntry(**entry), 201
