"""What other plugins call: the :class:`CortexAPI` service (``service(CortexAPI)``), the
operator copilot's readiness as ``GET /cortex/status`` reports it to a principal."""

from __future__ import annotations

from host.api import Principal
from plugins.cortex.models import CortexStatus


class CortexAPI:
    """A plain base class, so ``service(CortexAPI)`` type-checks; the cortex plugin
    provides the implementation."""

    async def status(self, principal: Principal, probe: bool = False) -> CortexStatus:
        """The configured model (in the catalog, reachable at the last call, or now with
        ``probe``), the tools ``principal``'s chat may use, and its last use."""
        raise NotImplementedError


__all__ = ["CortexAPI", "CortexStatus"]
