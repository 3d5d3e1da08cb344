"""Registers ``compose-atomic completion`` (a built-in plugin: see DEFAULT_PLUGINS)."""

from __future__ import annotations

import os

import click

from compose_atomic import hookimpl

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_COMPOSE_ATOMIC_COMPLETE"


@hookimpl
def register_commands(cli):
    @cli.command()
    @click.argument("shell", required=False, type=click.Choice(SHELLS))
    def completion(shell: str | None) -> None:
        """Print the shell completion script (bash, zsh or fish; default: $SHELL).

        \b
        bash:  echo 'eval "$(compose-atomic completion bash)"' >> ~/.bashrc
        zsh:   echo 'eval "$(compose-atomic completion zsh)"' >> ~/.zshrc
        fish:  compose-atomic completion fish > ~/.config/fish/completions/compose-atomic.fish
        """
        from click.shell_completion import get_completion_class

        from ..errors import UsageError

        shell = shell or os.path.basename(os.environ.get("SHELL", ""))
        if shell not in SHELLS:
            raise UsageError(f"cannot tell the shell from SHELL={os.environ.get('SHELL', '')!r}",
                             hint="Name it: compose-atomic completion bash|zsh|fish")
        completer = get_completion_class(shell)(cli, {}, "compose-atomic", COMPLETE_VAR)
        click.echo(completer.source())
