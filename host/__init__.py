"""agent-gateway host: a small Quart app that loads every route family as a pluggy plugin."""

__version__ = "0.1.0"
