"""A greeting (any authenticated caller) and a guest book (needs the plugin's gate)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field
from quart import Blueprint, Quart, current_app
from quart_schema import validate_request, validate_response

from host.api import context, current_principal, requires_gate

GATE = "allow_hello_write"
bp = Blueprint("hello", __name__, url_prefix="/hello")


class Greeting(BaseModel):
    message: str


class GuestBookEntry(BaseModel):
    name: str = Field(..., min_length=1, max_length=100)


class GuestBook(BaseModel):
    entries: list[str]


def guest_book(app: Quart) -> list[str]:
    book: list[str] = context(app).extras.setdefault("hello.guest_book", [])
    return book


@bp.get("/greet")
@validate_response(Greeting)
async def greet() -> Greeting:
    """Greet the caller by principal name."""
    return Greeting(message=f"hello, {current_principal().name}")


@bp.post("/guest-book")
@requires_gate(GATE)
@validate_request(GuestBookEntry)
@validate_response(GuestBook, 201)
async def sign(data: GuestBookEntry) -> Any:
    """Sign the guest book (policy gate allow_hello_write)."""
    book = guest_book(current_app)
    book.append(data.name)
    return GuestBook(entries=list(book)), 201
