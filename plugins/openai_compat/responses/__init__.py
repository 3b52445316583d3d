"""The Responses surface, ``/v1/responses``, served over chat-completion providers:
``routes.py`` (create, get, delete), ``bodies.py`` (the request and the answers),
``translate.py`` (Responses <-> chat completions), ``stream.py`` (chunks -> the typed
stream events), ``store.py`` (stored responses, for ``previous_response_id``) and
``errors.py`` (the OpenResponses error types)."""
