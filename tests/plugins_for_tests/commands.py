"""A plugin that adds ``gateway shout`` to the command line (loaded via an entry point)."""

from __future__ import annotations

from typing import Any

import click

from host.api import hookimpl


@hookimpl
def gateway_register_commands(cli: Any) -> None:
    @cli.command("shout")
    @click.argument("words", nargs=-1)
    def shout(words: tuple[str, ...]) -> None:
        """Print the words in capitals."""
        click.echo(" ".join(words).upper() + "!")
