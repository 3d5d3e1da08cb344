"""One hook policy: a gate's error stops the operation, a notification's error is a warning."""

from __future__ import annotations

import inspect

import pytest

from compose_atomic import hookimpl, hookspecs
from compose_atomic.errors import HookFailed, OperationFailed
from compose_atomic.plugins import call_hook, pm


class Raising:
    @hookimpl
    def after_migrate(self, service):
        raise RuntimeError("webhook down")

    @hookimpl
    def on_backup_failure(self, service):
        raise RuntimeError("alert plugin bug")

    @hookimpl
    def before_backup(self, service):
        raise ValueError("maintenance window")

    @hookimpl
    def before_deploy(self, service):
        raise OperationFailed(f"{service}: frozen")


@pytest.fixture
def raising():
    pm.register(Raising(), name="test-raising")
    yield
    pm.unregister(name="test-raising")


def test_every_hook_is_a_gate_or_a_notification():
    for name, func in inspect.getmembers(hookspecs, inspect.isfunction):
        if hasattr(func, "compose_atomic_spec"):
            assert getattr(func, "kind", None) in (hookspecs.GATE, hookspecs.NOTIFICATION), name


def test_a_raising_notification_is_a_warning_and_changes_nothing(raising):
    warnings = []
    assert call_hook("after_migrate", warn=warnings.append, project=None, service="web", database="db",
                     snapshot_path="/x", outcome="MigrationFailed") is None
    assert call_hook("on_backup_failure", warn=warnings.append, project=None, service="db", error="disk full") is None
    assert warnings == [
        "web: the after_migrate hook failed (ignored, it is a notification): RuntimeError: webhook down",
        "db: the on_backup_failure hook failed (ignored, it is a notification): RuntimeError: alert plugin bug"]


def test_a_raising_gate_stops_with_the_hook_named(raising):
    with pytest.raises(HookFailed, match="db: the before_backup hook failed: ValueError: maintenance window"):
        call_hook("before_backup", project=None, service="db")


def test_a_gate_raising_a_compose_atomic_error_keeps_it(raising):
    with pytest.raises(OperationFailed, match="web: frozen") as info:
        call_hook("before_deploy", project=None, service="web", old_container=None, new_image="x")
    assert not isinstance(info.value, HookFailed)
