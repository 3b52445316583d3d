"""What a provider author and another plugin import from the OpenAI-compatible plugin:
nothing else of it is public.

- Providers (``gateway_register_providers``): subclass :class:`Provider`; each call gets
  the :class:`ModelRoute` of the ``[models.<name>]`` entry and an OpenAI-shaped body, and
  answers OpenAI-shaped objects; raise :class:`ProviderError` for the error envelope.
- The :class:`ModelCatalog` service (``host.api.service(ModelCatalog)``): the configured
  models; ``chat(model, body)`` and ``chat_stream(model, body)`` call one, routed over
  its deployments and fallbacks like the ``/v1`` routes (the answer's ``model`` names
  the model that answered). ``scanned_chat_stream(..., owner=<principal key>)`` makes
  the call for that principal: its ``models`` list and budgets apply first
  (``model_not_allowed``, ``budget_exceeded``), its tokens count in its usage.
"""

from __future__ import annotations

from plugins.openai_compat.model_catalog import ModelCatalog
from plugins.openai_compat.providers.base import ModelRoute, Provider, ProviderError
from plugins.openai_compat.usage_api import UsageAPI

__all__ = ["ModelCatalog", "ModelRoute", "Provider", "ProviderError", "UsageAPI"]
