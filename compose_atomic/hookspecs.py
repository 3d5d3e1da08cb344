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


# ---- deploy ------------------------------------------------------------------


@hookspec
def before_deploy(project, service, old_container, new_image):
    """Run before a service's new container starts; raise to stop the deploy."""


@hookspec(firstresult=True)
def check_health(project, service, container):
    """Judge a new container: return True, False, or None to let others decide."""


@hookspec
def before_switch(project, service, old_container, new_container):
    """Run once the new container is healthy, before traffic moves to it."""


@hookspec
def after_switch(project, service, old_container, new_container):
    """Run once traffic goes to the new container."""


@hookspec
def on_rollback(project, service, old_container, new_container, reason):
    """Run after a failed deploy, once the old version serves again."""


@hookspec
def after_deploy(project, service, old_container, new_container, outcome):
    """Run when a service's deploy has ended, whatever the outcome."""


# ---- backup --------------------------------------------------------------------


@hookspec
def register_offsite_targets(register):
    """Add offsite backup targets: call register(name, build), build(context) returns sidecar services."""


@hookspec
def before_backup(project, service):
    """Run before a backup that compose-atomic starts from the host; raise to stop it."""


@hookspec
def after_backup(project, service, path, size, checksum, verified):
    """Run after a backup was written, checksummed and verified."""


@hookspec
def on_backup_failure(project, service, error):
    """Run when a backup, verification or restore started from the host fails."""
