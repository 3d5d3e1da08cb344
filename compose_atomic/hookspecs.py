"""The hooks compose-atomic calls. Each is documented in docs/plugin_hooks.md.

Every hook is one of two kinds, and :func:`compose_atomic.plugins.call_hook` treats it so:

- ``@gate``: part of the operation. A plugin that raises stops the operation there, and the
  message names the hook and the plugin's error (exit 1 unless the error carries its own code).
- ``@notification``: told what happened. A plugin that raises costs a warning on stderr and
  never changes the outcome, the exit code or what is rolled back.
"""

from pluggy import HookimplMarker, HookspecMarker

hookspec = HookspecMarker("compose_atomic")
hookimpl = HookimplMarker("compose_atomic")

GATE = "gate"
NOTIFICATION = "notification"


def gate(function=None, **options):
    """A hookspec whose errors stop the operation."""
    def mark(fn):
        fn.kind = GATE
        return hookspec(**options)(fn)
    return mark(function) if function else mark


def notification(function):
    """A hookspec whose errors are warnings."""
    function.kind = NOTIFICATION
    return hookspec(function)


# ---- startup ---------------------------------------------------------------


@gate
def register_commands(cli):
    """Add click commands or groups to the compose-atomic CLI."""


@gate
def register_config_schema(register):
    """Declare the x-atomic keys a plugin owns, each with its JSON Schema."""


@gate
def validate_config(project):
    """Check a loaded project beyond the schema; return a list of ConfigProblem."""


# ---- deploy ------------------------------------------------------------------


@notification
def explain_plan(project, service):
    """Return lines that say more about a service's plan (``up --dry-run``), or None."""


@gate
def before_changes(project, plans):
    """Run once ``up`` has decided, before it pulls, snapshots or starts anything; raise to stop."""


@gate
def before_deploy(project, service, old_container, new_image):
    """Run before a service's new container starts; raise to stop the deploy."""


@gate(firstresult=True)
def check_health(project, service, container):
    """Judge a new container: return True, False, or None to let others decide."""


@gate
def before_switch(project, service, old_container, new_container):
    """Run once the new container is healthy, before traffic moves to it."""


@notification
def after_switch(project, service, old_container, new_container):
    """Run once traffic goes to the new container."""


@gate
def rollback_deploy(project, service, reason):
    """Undo what before_deploy changed once the old version serves again; raise RollbackFailed if not."""


@notification
def on_rollback(project, service, old_container, new_container, reason, receipt):
    """Run after a failed deploy, once the old version serves again (``receipt``: what the proxy saw)."""


@notification
def after_deploy(project, service, old_container, new_container, outcome, receipt):
    """Run when a service's deploy has ended, whatever the outcome (``receipt``: what the proxy saw, or None)."""


@notification
def after_write_hold(project, service, database, timed_out):
    """Run when the write hold of a service's migration lets the held requests through."""


# ---- lint ----------------------------------------------------------------------


@gate
def register_lint_rules(register):
    """Add SQL migration lint rules: call register(compose_atomic.lint.Rule(...)) for each."""
# ---- swarm -------------------------------------------------------------------


@gate
def swarm_stack(project, rendered):
    """Adjust a rendered Swarm stack (rendered.stack, rendered.findings) before it is written."""


@notification
def after_stack_deploy(project, result):
    """Run when `stack deploy` has settled, whatever the outcome (result.exit_code)."""
# ---- migrate -----------------------------------------------------------------


@gate
def before_snapshot(project, database, path):
    """Run before a snapshot of the database service is dumped to path."""


@notification
def after_snapshot(project, database, path, manifest):
    """Run once a snapshot is written, checked and renamed to path."""


@gate
def before_migrate(project, service, database, snapshot_path):
    """Run before a service's migration starts, once its snapshot exists."""


@notification
def after_migrate(project, service, database, snapshot_path, outcome):
    """Run when a migration has ended, before any restore; outcome says how."""


@gate
def before_restore(project, database, path, target_db):
    """Run before the snapshot at path is restored into target_db."""


@notification
def after_restore(project, database, path, target_db):
    """Run once a restore into target_db is verified and live."""
# ---- backup --------------------------------------------------------------------


@gate
def register_offsite_targets(register):
    """Add offsite backup targets: call register(name, build), build(context) returns sidecar services."""


@gate
def before_backup(project, service):
    """Run before a backup that compose-atomic starts from the host; raise to stop it."""


@notification
def after_backup(project, service, path, size, checksum, verified):
    """Run after a backup was written, checksummed and verified."""


@notification
def on_backup_failure(project, service, error):
    """Run when a backup, verification or restore started from the host fails."""
