"""The built-in webhook alert: a default plugin on on_rollback and after_deploy.

Slack and Discord both accept a JSON body with one text field (``text`` and
``content``); we send both. An alert that cannot be delivered costs a warning,
never the deploy's outcome.
"""

from __future__ import annotations

import sys

from ..hookspecs import hookimpl


def webhook_for(project, service: str) -> str:
    own = (project.service_x_atomic(service).get("alert") or {}).get("webhook")
    if own is not None:
        return own
    return (project.x_atomic.get("alert") or {}).get("webhook") or ""


def send(url: str, text: str) -> None:
    import httpx

    try:
        response = httpx.post(url, json={"text": text, "content": text}, timeout=5)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        print(f"warning: the alert webhook failed: {type(exc).__name__}: {exc}", file=sys.stderr)


@hookimpl
def on_rollback(project, service, reason):
    url = webhook_for(project, service)
    if url:
        send(url, f":warning: {project.name}/{service}: deploy rolled back: {reason}")


@hookimpl
def after_deploy(project, service, outcome):
    url = webhook_for(project, service)
    if url and outcome in ("failed", "rollback-failed"):
        send(url, f":rotating_light: {project.name}/{service}: deploy {outcome.replace('-', ' ')}; "
                  "check the service now")
