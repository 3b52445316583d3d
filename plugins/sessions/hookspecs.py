"""The hooks the sessions plugin declares, for other plugins to implement. Ranker authors
import their types from ``plugins.sessions.contract``."""

from __future__ import annotations

from host.api import Register, registry_hookspec


@registry_hookspec("memory_rankers", "memory ranker")
def gateway_register_memory_rankers(register: Register) -> None:
    """Register memory rankers that add to the shipped ranking of memory searches (an
    embedding similarity, say): ``register(name, ranker)``.

    :param register: ``register(name: str, ranker: contract.MemoryRanker)``; a ranker has
        ``async score(query: str, candidates: Sequence[contract.MemoryCandidate])
        -> Sequence[float] | None`` (0 to 1 per candidate, in order; None abstains).

    All implementations are called at start-up; a name registered twice fails start-up.
    Each search calls every ranker; its scores are added times ``ranker_weight``.
    """
