"""Turn the resolved compose project into a stack file for ``docker stack deploy``.

Swarm already has what a rolling deploy needs (start-first updates, a health gate,
a monitor window, automatic rollback), but its defaults are stop-first and "pause
on failure", and most users never change them. The renderer writes the safe
settings for every x-atomic service, puts a Caddy service in front of the routed
ones, pins stateful services (and their backup sidecars) to a node, and reports
every compose key that Swarm ignores or cannot do, instead of silently dropping it.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from .. import ports
from ..durations import parse_duration
from ..project import Project
from ..settings import DEFAULTS, parse_route
from . import caddy

STACK_VERSION = "3.8"
PROXY_SERVICE = "atomic-proxy"
PROXY_CONFIG = "atomic-proxy-caddy"
PROXY_CONFIG_TARGET = "/etc/caddy/compose-atomic.json"
PROXY_DATA_VOLUME = "atomic-proxy-data"
DEFAULT_PROXY_IMAGE = DEFAULTS["proxy.image"]
DEFAULT_PROXY_PORTS = DEFAULTS["proxy.ports"]
DEFAULT_MONITOR = DEFAULTS["monitor"]
DEFAULT_DRAIN = DEFAULTS["drain"]
DEFAULT_HEALTH_TIMEOUT = DEFAULTS["health.timeout"]
DEFAULT_HEALTH_INTERVAL = DEFAULTS["health.interval"]
PROBE_TIMEOUT = 5.0
LABEL_PREFIX = "compose-atomic"

#: Service keys a swarm service carries as they are.
KEPT_KEYS = {
    "cap_add", "cap_drop", "command", "configs", "credential_spec", "deploy", "dns", "dns_search",
    "entrypoint", "environment", "extra_hosts", "healthcheck", "hostname", "image", "init",
    "isolation", "labels", "logging", "networks", "ports", "read_only", "secrets",
    "stop_grace_period", "stop_signal", "sysctls", "tmpfs", "tty", "stdin_open", "ulimits", "user",
    "volumes", "working_dir",
}
#: Keys with no meaning for a swarm service, and why (reported, then left out).
IGNORED_KEYS = {
    "container_name": "Swarm names tasks <stack>_<service>.<n>; other services reach it by its service name",
    "links": "use the service name on a shared network instead",
    "external_links": "use the service name on a shared network instead",
    "network_mode": "swarm services always use the stack's networks",
    "cgroup_parent": "not supported by swarm services",
    "devices": "not supported by swarm services",
    "privileged": "not supported by swarm services",
    "security_opt": "not supported by swarm services",
    "userns_mode": "not supported by swarm services",
    "pid": "not supported by swarm services",
    "ipc": "not supported by swarm services",
    "mac_address": "not supported by swarm services",
    "pull_policy": "Swarm pulls on the node that runs the task",
    "profiles": "a stack has no profiles; render with the profiles you want enabled",
    "develop": "compose watch has no swarm equivalent",
    "platform": "use deploy.placement.constraints: [node.platform.arch == ...]",
    "expose": "not needed: every port is reachable on the stack's networks",
    "shm_size": "not supported by swarm services; mount a tmpfs at /dev/shm",
    "oom_score_adj": "not supported by swarm services",
    "runtime": "not supported by swarm services",
    "stop_signal_timeout": "not supported by swarm services",
    "annotations": "not supported by swarm services",
    "attach": "no meaning for a swarm service",
    "env_file": "already merged into environment",
    "post_start": "lifecycle hooks are not supported by swarm services",
    "pre_stop": "lifecycle hooks are not supported by swarm services",
}
_RESTART = {"no": "none", "always": "any", "unless-stopped": "any", "on-failure": "on-failure"}


@dataclass(frozen=True)
class Finding:
    """Something about the project that Swarm does differently, cannot do, or that we changed."""

    service: str | None
    key: str
    message: str
    severity: str = "warning"  # error: cannot deploy; warning: behaviour changes; info: converted

    def __str__(self) -> str:
        owner = f'service "{self.service}"' if self.service else "top level"
        return f"{owner}: {self.key}: {self.message}"


@dataclass
class RenderedStack:
    """The stack file (as a mapping), the proxy's config and what the user must know."""

    stack_name: str
    stack: dict[str, Any]
    findings: list[Finding] = field(default_factory=list)
    caddy_config: dict[str, Any] | None = None
    caddy_file: str | None = None  # file name the proxy's config goes to, beside the stack file
    node_labels: dict[str, list[str]] = field(default_factory=dict)  # label -> pinned services

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def caddy_text(self) -> str | None:
        return caddy.config_text(self.caddy_config) if self.caddy_config is not None else None


def render_stack(project: Project, stack_name: str | None = None,
                 caddy_file: str = "caddy.json",
                 image_healthcheck: Callable[[str], dict[str, Any] | None] | None = None) -> RenderedStack:
    """Render ``project`` as a stack named ``stack_name`` (default: the project's name).

    ``caddy_file`` is the proxy config's file name relative to the stack file; the
    caller writes ``RenderedStack.caddy_text`` there. ``image_healthcheck(image)`` tells
    the image's own ``HEALTHCHECK`` (``{}`` for none, None when the image is not at hand),
    so that the stack file can say which check gates each rollout.
    """
    from ..plugins import call_hook, load_plugins

    name = stack_name or project.name or "stack"
    out = RenderedStack(stack_name=name, stack={"version": STACK_VERSION, "services": {}},
                        caddy_file=caddy_file)
    services: dict[str, Any] = out.stack["services"]
    for service, spec in project.services.items():
        services[service] = _service(project, service, spec, out.findings, image_healthcheck)
    _top_level(project, out)
    # Placement and the proxy are the built-in swarm_stack hook (compose_atomic.swarm.plugin).
    load_plugins()
    call_hook("swarm_stack", project=project, rendered=out)
    return out


# ---- services ---------------------------------------------------------------------------


def _service(project: Project, name: str, spec: dict[str, Any], findings: list[Finding],
             image_healthcheck: Callable[[str], dict[str, Any] | None] | None = None) -> dict[str, Any]:
    annotation = project.service_x_atomic(name)
    out: dict[str, Any] = {}
    for key, value in spec.items():
        if key in KEPT_KEYS:
            out[key] = copy.deepcopy(value)
        elif key.startswith("x-"):
            out[key] = copy.deepcopy(value)
        elif key in IGNORED_KEYS:
            findings.append(Finding(name, key, f"left out: {IGNORED_KEYS[key]}."))
        elif key not in ("build", "depends_on", "restart", "mem_limit", "mem_reservation", "cpus",
                         "scale"):
            findings.append(Finding(name, key, "left out: not a swarm service key."))
    _build(name, spec, out, findings)
    _depends_on(name, spec, findings)
    _restart_and_resources(name, spec, out, findings)
    _ports(name, out, findings)
    _volumes(name, out, findings)
    _networks(name, out, findings)
    if "healthcheck" in out:
        _healthcheck_compat(name, out, findings)
    deploy = out.setdefault("deploy", {})
    if "endpoint_mode" not in deploy:
        # No IPVS, no VIP: resolve the service to its tasks' addresses (docs/swarm.md).
        deploy["endpoint_mode"] = "dnsrr"
    if annotation:
        _atomic(name, annotation, out, findings)
        _gate(name, annotation, out, findings, image_healthcheck)
    elif "update_config" not in deploy:
        findings.append(Finding(name, "x-atomic", (
            "not annotated: Swarm's own defaults apply to its updates (stop-first, pause on "
            "failure, no rollback)."), severity="info"))
    return out


def _build(name: str, spec: dict[str, Any], out: dict[str, Any], findings: list[Finding]) -> None:
    if "build" not in spec:
        return
    if spec.get("image"):
        findings.append(Finding(name, "build", (
            f"Swarm does not build images; it runs image {spec['image']!r} as it is in the registry "
            "(or on the node). Build and push it first: docker compose build && docker compose push.")))
    else:
        findings.append(Finding(name, "build", (
            "Swarm does not build images and this service has no image: add image: "
            "registry.example.com/<name>:<tag>, then docker compose build && docker compose push."),
            severity="error"))


def _depends_on(name: str, spec: dict[str, Any], findings: list[Finding]) -> None:
    depends = spec.get("depends_on")
    if not depends:
        return
    if isinstance(depends, list):
        depends = {d: {"condition": "service_started"} for d in depends}
    waits = {d: (c or {}).get("condition", "service_started") for d, c in depends.items()}
    strict = {d: c for d, c in waits.items() if c != "service_started"}
    if strict:
        detail = ", ".join(f"{d} ({c})" for d, c in sorted(strict.items()))
        findings.append(Finding(name, "depends_on", (
            f"Swarm starts every service at once and does not wait for {detail}; the service must "
            "retry its connections until they are up (Swarm restarts it if it exits meanwhile).")))
    else:
        findings.append(Finding(name, "depends_on", (
            f"Swarm ignores start order ({', '.join(sorted(waits))}); the service must retry "
            "its connections until they are up."), severity="info"))


def _restart_and_resources(name: str, spec: dict[str, Any], out: dict[str, Any],
                           findings: list[Finding]) -> None:
    deploy = out.setdefault("deploy", {})
    restart = spec.get("restart")
    if restart and "restart_policy" not in deploy:
        kind, _, attempts = str(restart).partition(":")
        condition = _RESTART.get(kind, "any")
        policy: dict[str, Any] = {"condition": condition}
        if attempts.isdigit():
            policy["max_attempts"] = int(attempts)
        deploy["restart_policy"] = policy
        findings.append(Finding(name, "restart", f"became deploy.restart_policy.condition: {condition}.",
                                severity="info"))
    limits = {"memory": spec.get("mem_limit"), "cpus": spec.get("cpus")}
    limits = {k: str(v) for k, v in limits.items() if v is not None}
    if limits:
        resources = deploy.setdefault("resources", {})
        resources.setdefault("limits", {}).update({k: v for k, v in limits.items()
                                                   if k not in resources.get("limits", {})})
        findings.append(Finding(name, "mem_limit/cpus", "became deploy.resources.limits.", severity="info"))
    if spec.get("mem_reservation") is not None:
        deploy.setdefault("resources", {}).setdefault("reservations", {}).setdefault(
            "memory", str(spec["mem_reservation"]))
    if spec.get("scale") is not None and "replicas" not in deploy:
        deploy["replicas"] = int(spec["scale"])


def _ports(name: str, out: dict[str, Any], findings: list[Finding]) -> None:
    ports = out.get("ports")
    if not ports:
        return
    converted = []
    for port in ports:
        entry = parse_port(port) if not isinstance(port, dict) else dict(port)
        if entry.get("host_ip"):
            findings.append(Finding(name, "ports", (
                f"host_ip {entry['host_ip']} left out: Swarm publishes on every interface of the node; "
                "firewall the port instead.")))
        published = entry.get("published")
        item: dict[str, Any] = {"target": int(entry["target"]), "protocol": entry.get("protocol") or "tcp",
                                "mode": "host"}
        if published not in (None, ""):
            item["published"] = int(str(published).split("-")[0])
        converted.append(item)
    out["ports"] = converted
    findings.append(Finding(name, "ports", (
        "published in host mode on the node that runs the task (the routing mesh needs IPVS and "
        "ingress VIPs; see docs/swarm.md): two tasks of the service cannot share a node, so its "
        "updates run stop-first."), severity="info"))


def parse_port(text: Any) -> dict[str, Any]:
    """Compose's short port syntax as the long one Swarm's stack file takes (``target`` alone is
    published on the same port)."""
    port = ports.parse_port(text)
    entry: dict[str, Any] = {"published": port.published or port.target, "target": port.target,
                             "protocol": port.protocol}
    if port.host_ip:
        entry = {"host_ip": port.host_ip, **entry}
    return entry


def _volumes(name: str, out: dict[str, Any], findings: list[Finding]) -> None:
    volumes = out.get("volumes")
    if not volumes:
        return
    kept = []
    for volume in volumes:
        if not isinstance(volume, dict):
            kept.append(volume)
            continue
        volume = dict(volume)
        bind = volume.pop("bind", None) or {}
        if volume.get("type") == "bind":
            findings.append(Finding(name, "volumes", (
                f"bind mount {volume.get('source')} must exist on every node that may run the task "
                "(Swarm does not create it); prefer a config, a secret or a named volume.")))
            if bind.get("propagation"):
                volume["bind"] = {"propagation": bind["propagation"]}
        options = volume.pop("volume", None) or {}
        if options.get("nocopy"):
            volume["volume"] = {"nocopy": True}
        if volume.get("type") == "tmpfs" and volume.get("tmpfs"):
            volume["tmpfs"] = {k: v for k, v in volume["tmpfs"].items() if k == "size"}
        for key in ("consistency", "image"):
            volume.pop(key, None)
        kept.append(volume)
    out["volumes"] = kept


def _networks(name: str, out: dict[str, Any], findings: list[Finding]) -> None:
    networks = out.get("networks")
    if isinstance(networks, dict):
        cleaned: dict[str, Any] = {}
        for net, options in networks.items():
            options = options or {}
            dropped = sorted(k for k in options if k != "aliases")
            if dropped:
                findings.append(Finding(name, f"networks.{net}", (
                    f"left out {', '.join(dropped)}: swarm tasks get their addresses from the "
                    "overlay network; only aliases carry over.")))
            cleaned[net] = {k: v for k, v in options.items() if k == "aliases"} or None
        out["networks"] = cleaned


def _healthcheck_compat(name: str, out: dict[str, Any], findings: list[Finding]) -> None:
    health = out["healthcheck"]
    for key in ("start_interval",):
        if key in health:
            health.pop(key)
            findings.append(Finding(name, f"healthcheck.{key}", "left out: not supported by stack files."))


def _seconds_text(seconds: float) -> str:
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{int(seconds * 1000)}ms"


def health_probe(annotation: dict[str, Any]) -> dict[str, Any] | None:
    """A Docker healthcheck equivalent to the x-atomic HTTP probe, or None without one.

    Swarm runs it inside the task: a task enters DNS (so the proxy) only once it
    passes. ``health.timeout`` is how long a new task has to become healthy, which is
    Docker's ``start_period``; after it, three failed probes in a row fail the task.
    """
    health = annotation.get("health") or {}
    route = annotation.get("route") or {}
    port = health.get("port") or route.get("port")
    if not port:
        return None
    path = health.get("path", "/")
    interval = parse_duration(health.get("interval", DEFAULT_HEALTH_INTERVAL))
    timeout = parse_duration(health.get("timeout", DEFAULT_HEALTH_TIMEOUT))
    probe = min(PROBE_TIMEOUT, max(1.0, interval * 3))
    url = f"http://127.0.0.1:{port}{path}"
    return {
        # No -T: Docker's own timeout bounds the probe, and busybox-static's wget crashes on -T.
        "test": ["CMD", "wget", "-q", "-O", "/dev/null", url],
        "interval": _seconds_text(interval),
        "timeout": _seconds_text(probe),
        "retries": 3,
        "start_period": _seconds_text(timeout),
    }


def _atomic(name: str, annotation: dict[str, Any], out: dict[str, Any], findings: list[Finding]) -> None:
    deploy = out["deploy"]
    order = annotation.get("strategy", "start-first")
    stateful = bool(_named_volumes(out))
    if stateful and "strategy" not in annotation:
        order = "stop-first"
        findings.append(Finding(name, "strategy", (
            "stop-first: the service writes to named volumes, and two copies of it (a database "
            "above all) must never run on the same data. Set x-atomic.strategy only if it is safe."),
            severity="info"))
    elif stateful and order == "start-first":
        findings.append(Finding(name, "strategy", (
            "start-first on a service with named volumes runs old and new on the same data for a "
            "moment; never do this for a database.")))
    if order == "start-first" and out.get("ports") and any("published" in p for p in out["ports"]):
        order = "stop-first"
        findings.append(Finding(name, "strategy", (
            "start-first became stop-first: the service publishes a host port, which the new task "
            "cannot bind while the old one holds it. Route it through the proxy (x-atomic.route) "
            "and drop ports: to keep start-first.")))
    monitor = annotation.get("monitor", DEFAULT_MONITOR)
    update = {"parallelism": 1, "delay": "0s", "order": order, "failure_action": "rollback",
              "monitor": monitor, "max_failure_ratio": 0}
    rollback = {"parallelism": 1, "delay": "0s", "order": order, "failure_action": "pause",
                "monitor": monitor, "max_failure_ratio": 0}
    for key, ours in (("update_config", update), ("rollback_config", rollback)):
        theirs = deploy.get(key) or {}
        for setting, value in theirs.items():
            if setting in ours and ours[setting] != value:
                findings.append(Finding(name, f"deploy.{key}.{setting}", (
                    f"kept your {value!r} over compose-atomic's {ours[setting]!r}."), severity="info"))
        deploy[key] = {**ours, **theirs}
    if "stop_grace_period" not in out:
        out["stop_grace_period"] = annotation.get("drain", DEFAULT_DRAIN)
    if annotation.get("migrate"):
        findings.append(Finding(name, "x-atomic.migrate", (
            "not run by stack deploy: Swarm starts new tasks without a migration step or a snapshot. "
            "Run the migration first (backward-compatible with the running version), then deploy; "
            "see docs/swarm.md.")))
    if annotation.get("alert"):
        findings.append(Finding(name, "x-atomic.alert", (
            "not sent by Swarm itself; stack deploy's exit code (3 on rollback) and the "
            "after_stack_deploy hook are where to alert."), severity="info"))


#: The service key that says, in the rendered file, which check gates the service's rollout.
GATE_KEY = "x-atomic-gate"


def _gate(name: str, annotation: dict[str, Any], out: dict[str, Any], findings: list[Finding],
          image_healthcheck: Callable[[str], dict[str, Any] | None] | None) -> None:
    """Choose the check that gates the rollout, and write down which one it is.

    The service's own ``healthcheck:`` first; else an HTTP probe only when ``x-atomic.health.path``
    asks for one (as on one host); else the image's own ``HEALTHCHECK``, which a generated probe would override
    (an image that checks ``/healthz`` must not be gated by ``/`` answering 200).
    """
    if "healthcheck" in out:
        if out["healthcheck"].get("disable"):
            out[GATE_KEY] = "none: healthcheck disabled"
            findings.append(Finding(name, "healthcheck", "disabled: Swarm cannot tell a broken version "
                                                          "from a working one before it takes traffic."))
        else:
            out[GATE_KEY] = f"the service's healthcheck: {_test_text(out['healthcheck'].get('test'))}"
        return
    if (annotation.get("health") or {}).get("path"):  # as on one host: a path asks for the HTTP probe
        probe = health_probe(annotation)
        if probe is not None:
            out["healthcheck"] = probe
            out[GATE_KEY] = f"x-atomic.health: wget {probe['test'][-1]} inside the task"
            findings.append(Finding(name, "x-atomic.health", (
                f"became a healthcheck that runs `wget` inside the task against {probe['test'][-1]}; "
                "the image needs wget (busybox/alpine have it), or define healthcheck: yourself."),
                severity="info"))
            if annotation["health"].get("status"):
                findings.append(Finding(name, "x-atomic.health.status", (
                    "the generated healthcheck accepts any 2xx answer; define healthcheck: "
                    "to test one exact status.")))
            return
    image = out.get("image")
    own = image_healthcheck(image) if (image_healthcheck and image) else None
    test = (own or {}).get("Test") or []
    if own is not None and (not test or test[0] == "NONE"):
        out[GATE_KEY] = "none: no healthcheck in the service or its image"
        findings.append(Finding(name, "healthcheck", (
            f"no healthcheck here nor in the image {image}: Swarm counts a task as ready as soon as it "
            "runs, so a broken version is only caught if it exits within the monitor window. Add "
            "x-atomic.health (an HTTP probe) or healthcheck:.")))
    elif own is not None:
        out[GATE_KEY] = f"the image's HEALTHCHECK: {_test_text(test)}"
        findings.append(Finding(name, "healthcheck", (
            f"the rollout is gated by the image's own HEALTHCHECK ({_test_text(test)}); set "
            "x-atomic.health for an HTTP probe instead."), severity="info"))
    else:
        out[GATE_KEY] = "the image's HEALTHCHECK, if it has one (the image was not at hand to check)"
        findings.append(Finding(name, "healthcheck", (
            f"no healthcheck here: the image's own HEALTHCHECK gates the rollout; {image or 'the image'} "
            "was not at hand to check it has one. Without one, Swarm counts a task as ready as soon as it "
            "runs; add x-atomic.health (an HTTP probe) or healthcheck: to be sure.")))


def _test_text(test: Any) -> str:
    """A healthcheck's test as one line (``CMD-SHELL x`` / ``CMD a b`` / a plain string)."""
    if isinstance(test, str):
        return test
    if isinstance(test, list) and test:
        return " ".join(str(part) for part in test)
    return "?"


# ---- top level ----------------------------------------------------------------------------


def _generated_name(project: Project, key: str, value: dict[str, Any]) -> bool:
    return value.get("name") == f"{project.name}_{key}" and not value.get("external")


def _top_level(project: Project, out: RenderedStack) -> None:
    config = project.config
    for section in ("networks", "volumes", "secrets", "configs"):
        entries = config.get(section) or {}
        if not entries:
            continue
        cleaned: dict[str, Any] = {}
        for key, value in entries.items():
            value = dict(value or {})
            if _generated_name(project, key, value):
                value.pop("name")  # let the stack namespace it: <stack>_<key>
            if section == "networks":
                driver = value.get("driver")
                if driver in ("bridge", "host", "none") and not value.get("external"):
                    out.findings.append(Finding(None, f"networks.{key}.driver", (
                        f"{driver} networks are local to one host; the stack uses overlay instead.")))
                    value.pop("driver")
                value.pop("enable_ipv6", None) if not value.get("enable_ipv6") else None
                if not value.get("external"):
                    value.setdefault("driver", "overlay")
            if section in ("secrets", "configs"):
                if "environment" in value:
                    out.findings.append(Finding(None, f"{section}.{key}", (
                        "a secret or config from an environment variable is not supported by stack "
                        "files: write it to a file (mode 0600) or create it with docker secret create "
                        "and mark it external: true."), severity="error"))
                    value.pop("environment")
                if "content" in value:
                    out.findings.append(Finding(None, f"{section}.{key}", (
                        "inline content is not supported by stack files: put it in a file."),
                        severity="error"))
                    value.pop("content")
                if section == "secrets" and value.get("file"):
                    out.findings.append(Finding(None, f"secrets.{key}", (
                        "read from the machine that runs the deploy and stored encrypted in the "
                        "swarm; secrets are immutable, so rotate by giving the new one another name."),
                        severity="info"))
            cleaned[key] = value
        out.stack[section] = cleaned
    out.stack.setdefault("networks", {}).setdefault("default", {"driver": "overlay"})


def _named_volumes(spec: dict[str, Any]) -> set[str]:
    found = set()
    for volume in spec.get("volumes") or []:
        if isinstance(volume, dict) and volume.get("type") == "volume" and volume.get("source"):
            found.add(volume["source"])
    return found


def backup_sidecars(project: Project, database: str) -> list[str]:
    """Services that back up ``database``: named after it, labelled for it, or sharing its volumes.

    The backup generator's sidecars (``<db>-backup``, ``<db>-backup-offsite``) read the
    database's network and the backup volume; a sidecar that shares a volume with the
    database must run on the same node, since Swarm's local volumes are per node.
    """
    volumes = _named_volumes(project.services.get(database, {}))
    found = []
    for name, spec in project.services.items():
        if name == database:
            continue
        labels = spec.get("labels") or {}
        if isinstance(labels, list):
            labels = dict(item.partition("=")[::2] for item in labels)
        named = name.startswith((f"{database}-backup", f"{database}_backup"))
        labelled = labels.get(f"{LABEL_PREFIX}.backup-of") == database
        shares = bool(volumes & _named_volumes(spec))
        if named or labelled or shares:
            found.append(name)
    return found


def pin_stateful(project: Project, out: RenderedStack) -> None:
    """Pin services with named volumes, and their backup sidecars, to a labelled node.

    Swarm's local volumes live on one node: a database rescheduled elsewhere would
    start empty. Pinning by node label (not hostname) keeps the stack file portable;
    ``stack deploy`` labels the manager it runs on when no node carries the label yet.
    """
    services = out.stack["services"]
    pinned: dict[str, str] = {}
    # Databases with backups first, so that their sidecars join them rather than get a label of their own.
    order = sorted(project.services, key=lambda s: "backup" not in project.service_x_atomic(s))
    for name in order:
        if not _named_volumes(project.services[name]) or name in pinned:
            continue
        backed_up = "backup" in project.service_x_atomic(name)
        sidecars = backup_sidecars(project, name) if backed_up else []
        label = f"{LABEL_PREFIX}.{out.stack_name}.{name}"
        for member in [name, *sidecars]:
            if member in pinned:
                continue
            placement = services[member]["deploy"].setdefault("placement", {})
            if placement.get("constraints"):
                out.findings.append(Finding(member, "deploy.placement", (
                    "kept your placement constraints; make sure they keep it on the node that holds "
                    f"{name}'s volumes."), severity="info"))
                continue
            placement["constraints"] = [f"node.labels.{label} == true"]
            pinned[member] = label
            out.node_labels.setdefault(label, []).append(member)
            why = "it uses named volumes" if member == name else f"it backs up {name}"
            out.findings.append(Finding(member, "deploy.placement", (
                f"pinned to the node labelled {label}=true because {why}; local volumes do not move "
                "between nodes (stack deploy labels the current node if none is)."), severity="info"))
        if backed_up and not sidecars:
            out.findings.append(Finding(name, "x-atomic.backup", (
                "no backup sidecar in the project: generate it with `compose-atomic backup generate "
                "-o compose.backup.yml` and render with -f compose.backup.yml too.")))


# ---- the proxy ------------------------------------------------------------------------------


def add_proxy(project: Project, out: RenderedStack) -> None:
    """Put a Caddy service in front of the routed services, with its config as a swarm config."""
    caddy_file = out.caddy_file or "caddy.json"
    routes = []
    for name in project.atomic_services:
        route = parse_route(project.service_x_atomic(name))
        if route:
            routes.append(caddy.Route.of(name, route))
    if not routes:
        return
    services = out.stack["services"]
    if PROXY_SERVICE in services:
        out.findings.append(Finding(PROXY_SERVICE, "name", (
            f"the project has a service named {PROXY_SERVICE}, which the stack needs for its proxy; "
            "rename it."), severity="error"))
        return
    proxy = project.x_atomic.get("proxy") or {}
    ports = [parse_port(p) for p in proxy.get("ports", DEFAULT_PROXY_PORTS)]
    for port in ports:
        if port.get("host_ip"):
            out.findings.append(Finding(None, "x-atomic.proxy.ports", (
                f"host_ip {port['host_ip']} left out: Swarm publishes on every interface of the node.")))
    config = caddy.caddy_config(routes, [p["target"] for p in ports])
    text = caddy.config_text(config)
    out.caddy_config = config
    networks: list[str] = []
    for route in routes:
        for net in services[route.service].get("networks") or ["default"]:
            if net not in networks:
                networks.append(net)
    for net in proxy.get("networks") or []:
        if net not in networks:
            networks.append(net)
            out.stack["networks"].setdefault(net, {"external": True})
    services[PROXY_SERVICE] = {
        "image": proxy.get("image", DEFAULT_PROXY_IMAGE),
        "entrypoint": ["caddy"],
        "command": ["run", "--config", PROXY_CONFIG_TARGET],
        "configs": [{"source": PROXY_CONFIG, "target": PROXY_CONFIG_TARGET}],
        "ports": [{"target": int(p["target"]), "published": int(p["published"]),
                   "protocol": p.get("protocol") or "tcp", "mode": "host"} for p in ports],
        "networks": networks,
        "volumes": [{"type": "volume", "source": PROXY_DATA_VOLUME, "target": "/data"}],
        "labels": {f"{LABEL_PREFIX}.role": "proxy"},
        "deploy": {
            # One proxy per node on the node's own ports; replaced stop-first (a host port
            # cannot be bound twice), which only happens when the routes change.
            "mode": "global",
            "endpoint_mode": "dnsrr",
            "update_config": {"parallelism": 1, "order": "stop-first", "failure_action": "rollback",
                              "monitor": "5s"},
            "rollback_config": {"parallelism": 1, "order": "stop-first", "failure_action": "pause"},
            "restart_policy": {"condition": "any"},
        },
    }
    out.stack.setdefault("volumes", {})[PROXY_DATA_VOLUME] = {}
    out.stack.setdefault("configs", {})[PROXY_CONFIG] = {
        "name": f"{out.stack_name}_caddy_{caddy.config_digest(text)}",
        "file": caddy_file,
    }
    out.findings.append(Finding(PROXY_SERVICE, "x-atomic.route", (
        f"{len(routes)} route(s) served by Caddy ({proxy.get('image', DEFAULT_PROXY_IMAGE)}), published "
        "in host mode; it is replaced stop-first, which happens only when the routes change."),
        severity="info"))


_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


def valid_stack_name(name: str) -> bool:
    """Docker's rule for stack names (they prefix every service, network and volume)."""
    return bool(_NAME.match(name))


def stack_yaml(rendered: RenderedStack) -> str:
    """The stack file's text: what was changed or left out heads it as comments."""
    import yaml

    lines = [f"# Rendered by compose-atomic for `docker stack deploy -c FILE {rendered.stack_name}`.",
             "# Regenerate it instead of editing it: compose-atomic stack render -o FILE"]
    if rendered.findings:
        lines.append("#")
        lines.append("# What Swarm does differently from Compose for this project:")
        for finding in rendered.findings:
            lines.append(f"#   [{finding.severity}] {finding}")
    body = yaml.safe_dump(rendered.stack, sort_keys=False, default_flow_style=False, width=100)
    return "\n".join(lines) + "\n" + body
