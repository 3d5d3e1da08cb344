"""The built-in webhook alert: a default plugin on on_rollback and after_deploy.

Slack and Discord both accept a JSON body with one text field (``text`` and
``content``); we send both. A message carries the deploy's receipt when there is one; a
successful deploy sends one only when its receipt shows failed requests. An alert that cannot be delivered costs a warning,
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


def with_receipt(text: str, receipt) -> str:
    """The message and, when there is one, the deploy's receipt (what the proxy saw per version)."""
    if not receipt:
        return text
    from .receipt import summary

    return text + "\n" + "\n".join(f"> {line}" for line in summary(receipt))


@hookimpl
def on_rollback(project, service, reason, receipt):
    url = webhook_for(project, service)
    if url:
        send(url, with_receipt(f":warning: {project.name}/{service}: deploy rolled back: {reason}", receipt))


@hookimpl
def after_deploy(project, service, outcome, receipt):
    from .receipt import failed_requests

    url = webhook_for(project, service)
    if not url:
        return
    if outcome in ("failed", "rollback-failed"):
        send(url, with_receipt(f":rotating_light: {project.name}/{service}: deploy {outcome.replace('-', ' ')}; "
                               "check the service now", receipt))
    elif outcome == "deployed" and failed_requests(receipt):
        # A deploy that succeeded but failed requests while it switched is worth a message too.
        send(url, with_receipt(f":warning: {project.name}/{service}: deployed, but {failed_requests(receipt)} "
                               "requests failed while it switched", receipt))
