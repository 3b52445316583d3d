"""The chat surface: ``/v1/models``, ``/v1/chat/completions`` and ``/v1/completions``
(``routes.py``), and their bodies (``bodies.py``)."""
