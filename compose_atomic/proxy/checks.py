"""Checks on a project's routed services that `up` and `init` report (pure functions)."""

from __future__ import annotations

from typing import Any

#: Compose ``restart:`` values that bring a container back when the engine starts again.
RESTARTING = {"always", "unless-stopped"}


def restart_policy(service: dict[str, Any]) -> str | None:
    """The service's restart policy as Compose applies it on one host, or None without one.

    ``restart:`` wins; else ``deploy.restart_policy.condition`` (``any`` is ``always``,
    ``on-failure`` stays, ``none`` is none), which Compose also honours.
    """
    restart = service.get("restart")
    if restart is not None:
        restart = str(restart).strip()
        return None if restart in ("", "no", "false") else restart
    condition = ((service.get("deploy") or {}).get("restart_policy") or {}).get("condition")
    if condition in (None, "none"):
        return None
    return "always" if condition == "any" else str(condition)


def routed_without_restart(services: dict[str, dict[str, Any]]) -> list[str]:
    """Routed services (``x-atomic.route``) that nothing brings back after a reboot or an
    engine crash: no restart policy, or ``on-failure`` (an app that exits 0 on the SIGTERM of a
    clean engine stop is not restarted). Sorted by name."""
    found = []
    for name, service in services.items():
        if not ((service.get("x-atomic") or {}).get("route")):
            continue
        if restart_policy(service) not in RESTARTING:
            found.append(name)
    return sorted(found)


def restart_warning(service: str, services: dict[str, dict[str, Any]] | None = None) -> str:
    """The one-line warning for a routed service without a restart policy."""
    policy = restart_policy((services or {}).get(service) or {})
    what = f"restart: {policy}" if policy else "no restart policy"
    return (f"{what}: after a reboot or an engine crash the proxy comes back but {service} does not, "
            f"and its route answers 503 until the next `compose-atomic up`; add `restart: unless-stopped` "
            f"(or `always`) to {service}")
