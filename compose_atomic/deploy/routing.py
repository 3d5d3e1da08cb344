"""Where traffic goes: the managed proxy's routes and the services' DNS aliases.

Everything the deploy knows about reaching a container lives here: which networks the proxy
joins, how it dials a container (:func:`dials`), how a set of containers becomes its upstreams
(:func:`upstreams_for`), and how a container joins or leaves a service's aliases
(:func:`set_aliases`) when there is no proxy.
"""

from __future__ import annotations

from typing import Any

from .. import docker
from ..errors import OperationFailed
from ..progress import Progress
from ..project import Project
from ..settings import parse_route, proxy_settings


def make_proxy(project: Project):
    """The project's CaddyProxy with a route per routed service, or None without x-atomic.proxy."""
    settings = proxy_settings(project)
    if settings is None:
        return None
    from ..proxy import CaddyProxy, Route

    routes = []
    for service in project.atomic_services:
        route = parse_route(project.service_x_atomic(service))
        if route:
            routes.append(Route.of(service, route))
    return CaddyProxy(project.name, project.state_dir, image=settings.image, ports=list(settings.ports),
                      routes=routes)


def proxy_networks(project: Project) -> list[str]:
    """The compose networks routed services are on, plus ``x-atomic.proxy.networks``."""
    keys = network_keys(project)
    found: list[str] = []
    for service in project.atomic_services:
        if not project.service_x_atomic(service).get("route"):
            continue
        for info in docker.service_containers(project.name, service):
            for net in info["NetworkSettings"].get("Networks") or {}:
                if net in keys and net not in found:
                    found.append(net)
    for extra in proxy_settings(project).networks if project.x_atomic.get("proxy") is not None else ():
        name = (project.config.get("networks") or {}).get(extra, {}).get("name") or extra
        if name not in found:
            found.append(name)
    if not found and keys:
        found.append(next(iter(keys)))
    return found


def sync_proxy(project: Project, proxy, networks: list[str], progress: Progress | None = None) -> None:
    """Point each route at the running containers, keeping what the saved config routes to."""
    saved = proxy.saved_upstreams()
    for service, route in proxy.routes.items():
        running = docker.service_containers(project.name, service, running_only=True)
        current, route.balance = upstreams_for(running, route.port, networks)
        kept = [d for d in saved.get(service, []) if d in current]  # order kept: the first serves
        route.upstreams = kept + [d for d in current if d not in kept]

    def report(message: str, warning: bool) -> None:
        if progress is None:
            return
        if warning:
            progress.warn(f"Proxy {proxy.container_name}", message)
        else:
            progress.event(f"Proxy {proxy.container_name}", "Updated", message)

    proxy.ensure(networks, report)


def dials(info: dict[str, Any], port: int, networks: list[str]) -> list[str]:
    """Where the proxy reaches a container: its address on a network the proxy shares, then its name.

    The address first: no DNS lookup per connection (Docker's embedded DNS was seen timing out
    on a busy engine, which turned into 502s); the name second, as the fallback that follows the
    container if a restart gave it another address.
    """
    found = []
    joined = (info.get("NetworkSettings") or {}).get("Networks") or {}
    for net in networks:
        ip = (joined.get(net) or {}).get("IPAddress")
        if ip:
            found.append(f"{ip}:{port}")
            break
    found.append(f"{docker.name_of(info)}:{port}")
    return found


def upstreams_for(infos: list[dict[str, Any]], port: int, networks: list[str]) -> tuple[list[str], bool]:
    """The proxy's upstreams for the containers that serve a route, and whether to balance them.

    One container: its address, then its name, and the first one up serves. Replicas: round
    robin over one address each (a name would cost a DNS lookup per connection).
    """
    if len(infos) > 1:
        return [dials(i, port, networks)[0] for i in infos], True
    return [d for i in infos for d in dials(i, port, networks)], False


def service_aliases(project: Project, service: str, network_key: str) -> list[str]:
    aliases = [service]
    nets = project.services[service].get("networks") or {}
    conf = nets.get(network_key) if isinstance(nets, dict) else None
    aliases += list((conf or {}).get("aliases") or [])
    return aliases


def network_keys(project: Project) -> dict[str, str]:
    """Engine network name -> compose network key."""
    found = {}
    for key, net in (project.config.get("networks") or {}).items():
        found[(net or {}).get("name") or f"{project.name}_{key}"] = key
    return found


def set_aliases(project: Project, service: str, info: dict[str, Any], *, with_service: bool) -> None:
    """Reconnect a container to its networks with or without the service's aliases."""
    keys = network_keys(project)
    name = docker.name_of(info)
    for net, conf in (info["NetworkSettings"].get("Networks") or {}).items():
        if net not in keys:
            continue  # host, bridge, none or an external network we do not manage
        own = service_aliases(project, service, keys[net])
        current = [a for a in (conf.get("Aliases") or []) if a not in own and a != info["Id"][:12]]
        if name not in current:
            current.insert(0, name)
        wanted = current + (own if with_service else [])
        ip = (conf.get("IPAMConfig") or {}).get("IPv4Address")
        for command in (docker.network_disconnect(net, info["Id"]),
                        docker.network_connect(net, info["Id"], aliases=wanted, ip=ip)):
            result = docker.run(command)
            if not result.ok:
                raise OperationFailed(f"{service}: could not move the service's DNS aliases on {net}: "
                                      f"{result.last_line()}")
