"""The plugin manager: built-in default plugins, then third-party entry points."""

from __future__ import annotations

import importlib
import os
import re
import sys
from typing import Any, Callable

import pluggy

from . import hookspecs
from .errors import ComposeAtomicError, HookFailed

DEFAULT_PLUGINS: tuple[str, ...] = (
    "compose_atomic.default_plugins.core",
    "compose_atomic.deploy.alert",
    "compose_atomic.deploy.plugin",
    "compose_atomic.init.plugin",
    "compose_atomic.completion.plugin",
    "compose_atomic.lint.plugin",
    "compose_atomic.swarm.plugin",
    "compose_atomic.deploy.maintenance",
    "compose_atomic.migrate.plugin",
    "compose_atomic.backup.plugin",
    "compose_atomic.ops.plugin",
    "compose_atomic.pitr.plugin",
)
ENTRY_POINT_GROUP = "compose_atomic"

pm = pluggy.PluginManager("compose_atomic")
pm.add_hookspecs(hookspecs)

if os.environ.get("COMPOSE_ATOMIC_TRACE_PLUGINS"):

    def _before(hook_name, hook_impls, kwargs):
        print(f"[plugins] {hook_name} -> {[i.plugin_name for i in hook_impls]}", file=sys.stderr)

    def _after(outcome, hook_name, hook_impls, kwargs):
        pass

    pm.add_hookcall_monitoring(_before, _after)

_loaded = False
_dists: dict[str, Any] = {}  # entry point name -> its distribution (an _EntryPoint or importlib's)


class _EntryPoint:
    """One entry point found by :func:`entry_points`, read like importlib.metadata's.

    Its distribution's metadata (``dist_name``, ``version``) is read only when asked for:
    parsing METADATA is what needs the ``email`` package."""

    def __init__(self, name: str, value: str, dist_path: str) -> None:
        self.name, self.value, self.dist_path = name, value, dist_path

    @property
    def dist(self) -> Any:
        import importlib.metadata
        import pathlib

        return importlib.metadata.PathDistribution(pathlib.Path(self.dist_path))

    def load(self) -> Any:
        module, _, attr = self.value.partition("[")[0].partition(":")
        target = importlib.import_module(module.strip())
        for part in filter(None, attr.strip().split(".")):
            target = getattr(target, part)
        return target


def _scan_is_exact() -> bool:
    """Whether reading ``*.dist-info``/``*.egg-info`` folders on sys.path finds exactly the
    distributions importlib.metadata finds: no zip or egg entries on sys.path, no finder
    with distributions of its own. Otherwise we ask importlib.metadata."""
    for finder in sys.meta_path:
        if hasattr(finder, "find_distributions") and getattr(finder, "__name__", "") != "PathFinder":
            return False
    return not any(entry.lower().endswith(".egg") or os.path.isfile(entry) for entry in sys.path if entry)


def entry_points(group: str) -> list:
    """The entry points of ``group``, in importlib.metadata.entry_points(group=...)'s order
    (sys.path order, the first distribution of a name wins), without importing
    importlib.metadata: with the email, zipfile and csv modules it pulls in, that import was
    about a quarter of ``compose-atomic lint``'s start-up."""
    if not _scan_is_exact():
        import importlib.metadata

        return list(importlib.metadata.entry_points(group=group))
    found, seen = [], set()
    for entry in sys.path:
        try:
            children = os.listdir(entry or ".")
        except OSError:
            continue
        infos: dict[str, list[str]] = {}
        for child in children:
            low = child.lower()
            if low.endswith((".dist-info", ".egg-info")):
                name = low.rpartition(".")[0].partition("-")[0]
                normalized = re.sub(r"[-_.]+", "_", name)  # importlib's Prepared.normalize
                infos.setdefault(normalized, []).append(os.path.join(entry, child))
        for normalized, paths in infos.items():
            for path in paths:
                if normalized in seen:
                    continue
                seen.add(normalized)
                found.extend(_EntryPoint(name, value, path) for name, value in _read_group(path, group))
    return found


def _read_group(dist_path: str, group: str) -> list[tuple[str, str]]:
    """``name = value`` pairs of one section of a distribution's entry_points.txt
    (importlib.metadata's Sectioned reading: stripped lines, ``#`` comments)."""
    try:
        with open(os.path.join(dist_path, "entry_points.txt"), encoding="utf-8") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError):
        return []
    pairs, section = [], None
    for line in map(str.strip, text.splitlines()):
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line.strip("[]")
        elif section == group:
            name, _, value = line.partition("=")
            pairs.append((name.strip(), value.strip()))
    return pairs


def load_plugins() -> None:
    """Load third-party plugins once, then the built-in ones (idempotent).

    A plugin that fails to import costs a one-line warning, not the tool:
    a broken notifier must never block a deploy or a rollback.
    """
    global _loaded
    if _loaded:
        return
    _loaded = True
    allow = os.environ.get("COMPOSE_ATOMIC_LOAD_PLUGINS")
    if allow is not None or not getattr(sys, "_called_from_test", False):
        allowed = None if allow is None else {n.strip() for n in allow.split(",") if n.strip()}
        for ep in entry_points(ENTRY_POINT_GROUP):
            if allowed is not None and ep.name not in allowed and _dist_name(ep) not in allowed:
                continue
            if pm.has_plugin(ep.name) or pm.is_blocked(ep.name):
                continue
            try:
                pm.register(ep.load(), name=ep.name)
                _dists[ep.name] = ep
            except Exception as exc:  # noqa: BLE001 - isolation is the point
                print(f"warning: plugin {ep.name!r} ({_dist_name(ep)}) failed to load and is skipped: "
                      f"{type(exc).__name__}: {exc}", file=sys.stderr)
    for module_name in DEFAULT_PLUGINS:
        if not pm.has_plugin(module_name):
            pm.register(importlib.import_module(module_name), name=module_name)


def _dist_name(ep: Any) -> str:
    dist = ep.dist
    return (dist.name if dist is not None else None) or ep.name


def get_plugins() -> list[dict]:
    """Describe every registered plugin: name, version, the hooks it implements."""
    load_plugins()
    plugins = []
    for plugin in pm.get_plugins():
        name = pm.get_name(plugin)
        info = {
            "name": name,
            "hooks": sorted(h.name for h in pm.get_hookcallers(plugin) or []),
            "builtin": name in DEFAULT_PLUGINS,
        }
        dist = _dists[name].dist if name in _dists else None
        if dist is not None:
            info["package"] = dist.metadata["Name"]
            info["version"] = dist.version
        plugins.append(info)
    return sorted(plugins, key=lambda p: (p["builtin"], p["name"]))


def call_hook(name: str, *, warn: Callable[[str], None] | None = None, **kwargs: Any) -> Any:
    """Call a hook by the policy its spec declares (see :mod:`compose_atomic.hookspecs`).

    A gate's error stops the operation: a ComposeAtomicError goes on as it is (its exit code
    counts), anything else becomes a HookFailed naming the hook and the plugin. A
    notification's error is passed to ``warn`` (default: a warning line on stderr) and the
    call returns None: it never changes the outcome.
    """
    load_plugins()
    kind = getattr(getattr(hookspecs, name), "kind")
    try:
        return getattr(pm.hook, name)(**kwargs)
    except Exception as exc:  # noqa: BLE001 - a plugin bug must not become a traceback
        where = kwargs.get("service") or kwargs.get("database")
        prefix = f"{where}: " if isinstance(where, str) else ""
        what = exc.message if isinstance(exc, ComposeAtomicError) else f"{type(exc).__name__}: {exc}"
        if kind == hookspecs.GATE:
            if isinstance(exc, ComposeAtomicError):
                raise
            raise HookFailed(f"{prefix}the {name} hook failed: {what}") from exc
        (warn or _warn)(f"{prefix}the {name} hook failed (ignored, it is a notification): {what}")
        return None


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)
