"""The hooks compose-atomic calls. Each is documented in docs/plugin_hooks.md."""

from pluggy import HookimplMarker, HookspecMarker

hookspec = HookspecMarker("compose_atomic")
hookimpl = HookimplMarker("compose_atomic")


# ---- startup ---------------------------------------------------------------


@hookspec
def register_commands(cli):
    """Add click commands or groups to the compose-atomic CLI."""


@hookspec
def register_config_schema(register):
    """Declare the x-atomic keys a plugin owns, each with its JSON Schema."""


@hookspec
def validate_config(project):
    """Check a loaded project beyond the schema; return a list of ConfigProblem."""
