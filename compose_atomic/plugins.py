"""The plugin manager: built-in default plugins, then third-party entry points."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
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
_dists: dict[str, importlib.metadata.Distribution] = {}


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
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist else ep.name
            if allowed is not None and dist not in allowed and ep.name not in allowed:
                continue
            if pm.has_plugin(ep.name) or pm.is_blocked(ep.name):
                continue
            try:
                pm.register(ep.load(), name=ep.name)
                if ep.dist is not None:
                    _dists[ep.name] = ep.dist
            except Exception as exc:  # noqa: BLE001 - isolation is the point
                print(f"warning: plugin {ep.name!r} ({dist}) failed to load and is skipped: "
                      f"{type(exc).__name__}: {exc}", file=sys.stderr)
    for module_name in DEFAULT_PLUGINS:
        if not pm.has_plugin(module_name):
            pm.register(importlib.import_module(module_name), name=module_name)


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
        dist = _dists.get(name)
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
