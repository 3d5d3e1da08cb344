"""The built-in lint plugin: the ``lint`` command and the built-in rules, both through hooks.

Top-level imports stay light (click only): ``compose-atomic --help`` loads this module.
"""

from __future__ import annotations

import sys

import click

from compose_atomic import hookimpl

FORMATS = ("text", "json", "sarif", "github", "alembic", "django")


@hookimpl
def register_lint_rules(register):
    from .rules import RULES

    for rule in RULES:
        register(rule)


def _split(values) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


@hookimpl
def register_commands(cli):
    @cli.command()
    @click.argument("paths", nargs=-1)
    @click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True,
                  help="Output format (json lines and columns are 1-based); alembic and django only with --plan.")
    @click.option("--pg-version", metavar="N", help="Target PostgreSQL version, e.g. 15 or 9.6 (default: "
                  "x-atomic.lint.pg_version, else 15).")
    @click.option("--exclude", "excludes", multiple=True, metavar="RULE,...", help="Rules to skip.")
    @click.option("--severity", "severities", multiple=True, metavar="RULE=LEVEL",
                  help="Override a rule's level: error, warning or off.")
    @click.option("--assume-in-transaction/--no-assume-in-transaction", default=None,
                  help="The migration runner wraps each file in a transaction.")
    @click.option("--list-rules", is_flag=True, help="List the rules and exit.")
    @click.option("--plan", is_flag=True, help="Print the migration split into safe steps instead of findings.")
    @click.option("--lock-timeout", default="2s", show_default=True, metavar="DURATION",
                  help="lock_timeout that --plan sets for each step.")
    @click.option("--trace", is_flag=True, help="Run the migration on a throwaway container of the project's "
                  "database image, record locks and rewrites, roll back.")
    @click.option("--service", metavar="NAME", help="With --trace: the PostgreSQL service whose image to use.")
    @click.option("--database-url", metavar="URL", help="With --trace: trace on this PostgreSQL instead (a scratch "
                  "copy: the locks are real). libpq URL or key=value; PG* variables fill in the rest, and alone "
                  "(no --service) name the server. Keep the password in PGPASSWORD or ~/.pgpass.")
    @click.option("--setup", "setups", multiple=True, metavar="FILE",
                  help="With --trace: SQL applied and committed first (the schema the migration expects).")
    @click.option("--from-snapshot", "from_snapshot", metavar="NAME|latest",
                  help="With --trace: start from a compose-atomic db snapshot of the service (real schema "
                       "and data) instead of an empty database.")
    @click.pass_context
    def lint(ctx, paths, fmt, pg_version, excludes, severities, assume_in_transaction, list_rules, plan,
             lock_timeout, trace, service, database_url, setups, from_snapshot):
        """Check SQL migrations for locks, rewrites and transaction mistakes.

        PATHS are files, directories (every *.sql below) or globs. Exit 0 when
        no error-level finding remains, 1 when one does, 2 on a usage error.
        Rule ids are squawk's, and `-- squawk-ignore rule` comments work.
        """
        from . import expand_paths
        from .cli import run_lint

        code = run_lint(ctx.obj, paths=paths, fmt=fmt, pg_version=pg_version, excludes=_split(excludes),
                        severities=_split(severities), assume_in_transaction=assume_in_transaction,
                        list_rules=list_rules, plan=plan, lock_timeout=lock_timeout, trace=trace,
                        service=service, setups=list(setups), expand=expand_paths,
                        from_snapshot=from_snapshot, database_url=database_url)
        sys.stdout.flush()
        ctx.exit(code)
