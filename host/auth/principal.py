"""Who is calling: a principal with the policy gates it was granted."""

from __future__ import annotations

from dataclasses import dataclass, field

from host.settings import RateLimit


@dataclass(frozen=True)
class Principal:
    name: str
    kind: str  # "token" | "session" | "localhost-dev" | "admin" | a plugin's own
    gates: frozenset[str] = field(default_factory=frozenset)
    rate_limit: RateLimit = field(default_factory=RateLimit)

    def has_gate(self, gate: str) -> bool:
        return "*" in self.gates or gate in self.gates

    @property
    def key(self) -> str:
        """The rate-limit bucket key: one bucket per principal."""
        return f"{self.kind}:{self.name}"

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "kind": self.kind, "gates": sorted(self.gates)}
