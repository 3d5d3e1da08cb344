"""compose-atomic-notify: post a chat message when a deploy is rolled back (or ends).

A third-party compose-atomic plugin, packaged on its own: the ``compose_atomic``
entry point in pyproject.toml names this module, and compose-atomic registers the
``@hookimpl`` functions below. It shows the four things a plugin usually does:

- owns a configuration key (``x-atomic.notify``) through ``register_config_schema``,
  and checks what a schema cannot through ``validate_config``;
- reacts to deploys through ``on_rollback`` and ``after_deploy``;
- adds a command (``compose-atomic notify-test``) through ``register_commands``.

The message is JSON that Slack and Discord incoming webhooks both accept
(``text`` for Slack, ``content`` for Discord). A notifier must never make a
rollback fail, so delivery errors become one warning line on stderr. Webhook
URLs carry their token in the path: only the host is ever printed.
"""

from __future__ import annotations

import os
import sys
from typing import Any
from urllib.parse import urlsplit

import click

from compose_atomic import hookimpl

__version__ = "0.1.0"

ENV_WEBHOOK = "COMPOSE_ATOMIC_NOTIFY_WEBHOOK"
EVENTS = ("rollback", "deploy")
DEFAULT_EVENTS = ["rollback"]

SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "compose-atomic-notify: post a Slack/Discord-compatible message to a webhook.",
    "additionalProperties": False,
    "properties": {
        "webhook": {
            "type": "string",
            "pattern": "^(https?://.+)?$",
            "description": f"Incoming-webhook URL (default: ${ENV_WEBHOOK}); empty disables it.",
        },
        "events": {
            "type": "array",
            "items": {"enum": list(EVENTS)},
            "uniqueItems": True,
            "default": DEFAULT_EVENTS,
            "description": "rollback: a deploy failed and the old version serves again; "
                           "deploy: every deploy's end, whatever the outcome.",
        },
        "username": {"type": "string", "description": "Sender name shown by Discord (Slack ignores it)."},
        "timeout": {"$ref": "#/$defs/duration", "default": "5s"},
    },
}


class NotifyFailed(Exception):
    """The webhook could not be reached or refused the message."""


def settings(project) -> dict[str, Any]:
    """The project's notify settings with defaults; ``webhook`` is "" when none is set."""
    value = dict(project.x_atomic.get("notify") or {})
    value.setdefault("webhook", os.environ.get(ENV_WEBHOOK, ""))
    value.setdefault("events", list(DEFAULT_EVENTS))
    value.setdefault("username", "compose-atomic")
    value.setdefault("timeout", "5s")
    return value


def shown(url: str) -> str:
    """What may be printed of a webhook URL: its scheme and host, never the token."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" if parts.hostname else "the webhook"


def post(webhook: str, text: str, *, username: str = "compose-atomic", timeout: float = 5.0) -> None:
    """Send one message; raise NotifyFailed with a printable reason."""
    import httpx  # lazily: `compose-atomic --help` must not import httpx

    payload = {"text": text, "content": text, "username": username}
    try:
        response = httpx.post(webhook, json=payload, timeout=timeout)
    except httpx.HTTPError as exc:
        raise NotifyFailed(f"{shown(webhook)} could not be reached: {type(exc).__name__}") from None
    if response.status_code >= 300:
        raise NotifyFailed(f"{shown(webhook)} answered HTTP {response.status_code}")


def _deliver(project, event: str, text: str) -> None:
    config = settings(project)
    if not config["webhook"] or event not in config["events"]:
        return
    from compose_atomic.durations import parse_duration

    try:
        post(config["webhook"], text, username=config["username"], timeout=parse_duration(config["timeout"]))
    except NotifyFailed as exc:
        print(f"warning: notify: {exc}; the deploy itself is not affected", file=sys.stderr)


# ---- hooks -----------------------------------------------------------------------


@hookimpl
def register_config_schema(register):
    register("notify", SCHEMA, scope="project")


@hookimpl
def validate_config(project):
    from compose_atomic.config import ConfigProblem

    webhook = (project.x_atomic.get("notify") or {}).get("webhook") or ""
    if webhook and not urlsplit(webhook).hostname:
        return [ConfigProblem(("notify", "webhook"), "the URL has no host; it looks like "
                              "https://hooks.slack.com/services/... or https://discord.com/api/webhooks/...")]
    return []


@hookimpl
def on_rollback(project, service, reason):
    _deliver(project, "rollback", f":warning: {project.name}: the deploy of {service} was rolled back; "
                                  f"the previous version is serving. Reason: {reason}")


@hookimpl
def after_deploy(project, service, outcome):
    _deliver(project, "deploy", f"{project.name}: the deploy of {service} ended: {outcome}")


@hookimpl
def register_commands(cli):
    @cli.command(name="notify-test")
    @click.option("--webhook", metavar="URL", help=f"Post here instead of x-atomic.notify.webhook / ${ENV_WEBHOOK}.")
    @click.option("--message", default="compose-atomic-notify test message: notifications work.",
                  show_default=True, help="The text to send.")
    @click.pass_context
    def notify_test(ctx: click.Context, webhook: str | None, message: str) -> None:
        """Send a test message to the notify webhook (compose-atomic-notify)."""
        from compose_atomic.errors import ConfigError, OperationFailed

        username = "compose-atomic"
        if not webhook:
            from compose_atomic.config import validate_project
            from compose_atomic.project import load_project

            project = load_project(ctx.obj)
            validate_project(project)
            config = settings(project)
            webhook, username = config["webhook"], config["username"]
        if not webhook:
            raise ConfigError("no webhook to send to",
                              hint=f"Set x-atomic.notify.webhook, ${ENV_WEBHOOK}, or pass --webhook URL.")
        try:
            post(webhook, message, username=username)
        except NotifyFailed as exc:
            raise OperationFailed(f"the test message was not delivered: {exc}",
                                  hint="Check the URL, and that this host can reach it.") from None
        click.echo(f"sent a test message to {shown(webhook)}", err=True)
