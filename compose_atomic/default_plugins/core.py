"""Checks that span services: references to other services must exist."""

from __future__ import annotations

from compose_atomic import hookimpl
from compose_atomic.config import ConfigProblem, did_you_mean, route_conflicts


@hookimpl
def validate_config(project):
    problems = []
    services = list(project.services)
    for name in project.atomic_services:
        annotation = project.service_x_atomic(name)
        migrate = annotation.get("migrate") or {}
        database = migrate.get("database")
        if database is not None and database not in services:
            problems.append(ConfigProblem(
                ("migrate", "database"),
                f'no service "{database}" in the project; services are: {", ".join(services)}.'
                + did_you_mean(database, services),
                name,
            ))
        if "route" in annotation and project.services[name].get("network_mode") == "host":
            problems.append(ConfigProblem(
                ("route",),
                "a routed service cannot use network_mode: host; the proxy reaches it over a "
                "compose network. Remove network_mode or remove route.",
                name,
            ))
    problems += route_conflicts({name: project.service_x_atomic(name)["route"]
                                 for name in project.atomic_services
                                 if "route" in project.service_x_atomic(name)})
    if project.x_atomic.get("proxy") is not None and not any(
        "route" in project.service_x_atomic(s) for s in project.atomic_services
    ):
        problems.append(ConfigProblem(
            ("proxy",), "a proxy is configured but no service has x-atomic.route; "
                        "add route: {port: N} to the service it should serve.", None))
    return problems
