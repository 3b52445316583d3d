"""Password hashes for operator accounts: scrypt from the standard library.

A hash reads ``scrypt$n=32768,r=8,p=1$<salt>$<digest>`` (salt and digest in base64, no
padding), the text ``gateway auth hash-password`` prints. Verifying costs one scrypt
(tens of milliseconds of CPU and 32 MiB at the default cost): callers run it off the
event loop. Parameters below :data:`MIN_N` are refused, so no config can make the check
a fast hash.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from dataclasses import dataclass

SCHEME = "scrypt"
DEFAULT_N = 2**15
DEFAULT_R = 8
DEFAULT_P = 1
SALT_BYTES = 16
DIGEST_BYTES = 32
MIN_N = 2**14
MAX_N = 2**20
MAX_PASSWORD_CHARS = 1024  # what POST /gateway/auth/session accepts
MAX_MEMORY = 256 * 1024 * 1024  # one verification may use at most this much (128 * n * r)

_PARAMS = re.compile(r"^n=(\d+),r=(\d+),p=(\d+)$")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    # OpenSSL's default memory ceiling (32 MiB) is just below what n = 2**15, r = 8 needs.
    maxmem = 128 * r * (n + p + 2) + 1024 * 1024
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=maxmem
    )


@dataclass(frozen=True)
class PasswordHash:
    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    @classmethod
    def parse(cls, text: str) -> PasswordHash:
        """Read a hash; ValueError (for a person) when it is malformed or too weak."""
        parts = text.split("$")
        if len(parts) != 4 or parts[0] != SCHEME:
            raise ValueError(
                "not a password hash made by `gateway auth hash-password` "
                "(expected scrypt$n=...,r=...,p=...$<salt>$<hash>)"
            )
        params = _PARAMS.match(parts[1])
        if params is None:
            raise ValueError("scrypt parameters must read n=<N>,r=<R>,p=<P>")
        n, r, p = (int(v) for v in params.groups())
        if n < MIN_N or n > MAX_N or n & (n - 1):
            raise ValueError(f"scrypt n must be a power of two from {MIN_N} to {MAX_N}, got {n}")
        if not 1 <= r <= 32 or not 1 <= p <= 16 or 128 * n * r > MAX_MEMORY:
            raise ValueError(
                f"scrypt r must be 1 to 32 and p 1 to 16, with 128*n*r at most "
                f"{MAX_MEMORY // 2**20} MiB; got r={r}, p={p}"
            )
        try:
            salt, digest = _unb64(parts[2]), _unb64(parts[3])
        except (binascii.Error, ValueError):
            raise ValueError("the salt and hash of a password hash must be base64") from None
        if len(salt) < 8 or len(digest) < 16:
            raise ValueError("a password hash needs a salt of 8+ bytes and a hash of 16+ bytes")
        return cls(n, r, p, salt, digest)

    def verify(self, password: str) -> bool:
        """Whether ``password`` matches, compared in constant time. CPU-bound: run it in
        a thread."""
        candidate = _scrypt(password, self.salt, self.n, self.r, self.p, len(self.digest))
        return hmac.compare_digest(candidate, self.digest)

    def __str__(self) -> str:
        return f"{SCHEME}$n={self.n},r={self.r},p={self.p}${_b64(self.salt)}${_b64(self.digest)}"

    def masked(self) -> str:
        """The hash with its digest hidden; the parameters and salt say nothing alone."""
        return f"{SCHEME}$n={self.n},r={self.r},p={self.p}${_b64(self.salt)}$**********"


def hash_password(password: str, *, n: int = DEFAULT_N) -> str:
    """A new hash of ``password`` with a fresh random salt."""
    salt = os.urandom(SALT_BYTES)
    digest = _scrypt(password, salt, n, DEFAULT_R, DEFAULT_P, DIGEST_BYTES)
    return str(PasswordHash(n, DEFAULT_R, DEFAULT_P, salt, digest))


class SecretVerifier:
    """Checks a password against one held in clear (``password = { env = ... }``) with
    the same scrypt as a stored hash, so every login costs the same whatever the account
    (and an unknown one): the clear value's own hash is made on first use."""

    __slots__ = ("_hash", "_secret")

    def __init__(self, secret: str) -> None:
        self._secret = secret
        self._hash: PasswordHash | None = None

    def verify(self, password: str) -> bool:
        if self._hash is None:
            self._hash = PasswordHash.parse(hash_password(self._secret))
        return self._hash.verify(password)


# What an unknown account is checked against: the same work, never a match.
UNKNOWN_ACCOUNT = PasswordHash(
    DEFAULT_N, DEFAULT_R, DEFAULT_P, os.urandom(SALT_BYTES), os.urandom(DIGEST_BYTES)
)
