"""Authentication, rate limits and policy gates."""

from host.auth.decorators import public, requires_gate
from host.auth.guard import Authenticator
from host.auth.principal import Principal

__all__ = ["Authenticator", "Principal", "public", "requires_gate"]
