"""The deploy hooks fire at the documented points, with the documented arguments (real engine)."""

from __future__ import annotations

import pytest

from compose_atomic import hookimpl
from compose_atomic.deploy.up import up
from compose_atomic.errors import OperationFailed, RolledBack
from compose_atomic.plugins import load_plugins, pm
from compose_atomic.project import ComposeOptions, load_project
from conftest import run_cli
from test_deploy_support import app_service, free_port, get_version, wait_for_version, write_project

pytestmark = pytest.mark.docker


class Recorder:
    def __init__(self, port: int) -> None:
        self.port = port
        self.calls: list[tuple] = []
        self.refuse = False
        self.verdict = None

    @staticmethod
    def _name(container):
        return container.name if container is not None else None

    @hookimpl
    def before_deploy(self, project, service, old_container, new_image):
        self.calls.append(("before_deploy", service, self._name(old_container), new_image))
        if self.refuse:
            raise OperationFailed(f"{service}: migration refused")

    @hookimpl
    def check_health(self, service, container):
        self.calls.append(("check_health", service, self._name(container)))
        return self.verdict

    @hookimpl
    def before_switch(self, service, old_container, new_container):
        self.calls.append(("before_switch", service, self._name(old_container), self._name(new_container)))

    @hookimpl
    def after_switch(self, service, old_container, new_container):
        self.calls.append(("after_switch", service, self._name(old_container), self._name(new_container)))

    @hookimpl
    def on_rollback(self, project, service, old_container, new_container, reason):
        # "once the old version serves again": the proxy answers with v1 while this runs.
        self.calls.append(("on_rollback", service, self._name(old_container), get_version(self.port), reason))

    @hookimpl
    def after_deploy(self, service, outcome):
        self.calls.append(("after_deploy", service, outcome))


@pytest.fixture
def recorder_project(project_name, tmp_path):
    load_plugins()
    port = free_port()
    write_project(tmp_path, {"web": app_service("v1")}, proxy_port=port)
    assert run_cli("-p", project_name, "up", cwd=tmp_path).returncode == 0
    wait_for_version(port, "v1")
    recorder = Recorder(port)
    pm.register(recorder, name="test-recorder")
    options = ComposeOptions(files=(str(tmp_path / "compose.yaml"),), project_name=project_name)
    try:
        yield recorder, options, port, tmp_path
    finally:
        pm.unregister(name="test-recorder")


def deploy(options):
    return up(load_project(options), services=[], flags={}, raw_args=[], lock_wait=None)


def test_refusing_before_deploy_then_unhealthy_verdict_then_success(recorder_project, project_name):
    recorder, options, port, tmp_path = recorder_project
    old = f"{project_name}-web-1"

    write_project(tmp_path, {"web": app_service("v2")}, proxy_port=port)
    recorder.refuse = True
    with pytest.raises(OperationFailed, match="migration refused") as refused:
        deploy(options)
    assert refused.value.exit_code == 1
    assert [c[0] for c in recorder.calls] == ["before_deploy", "after_deploy"]
    assert recorder.calls[0] == ("before_deploy", "web", old, "compose-atomic-testbed/busybox:1")
    assert recorder.calls[-1] == ("after_deploy", "web", "failed")
    assert get_version(port) == "v1"

    recorder.calls.clear()
    recorder.refuse = False
    recorder.verdict = False
    with pytest.raises(RolledBack) as rolled:
        deploy(options)
    assert rolled.value.exit_code == 3
    assert [c[0] for c in recorder.calls] == ["before_deploy", "check_health", "on_rollback", "after_deploy"]
    _, service, old_name, serving, reason = recorder.calls[2]
    assert (service, old_name, serving) == ("web", old, "v1") and "check_health" in reason
    assert recorder.calls[-1] == ("after_deploy", "web", "rolled-back")

    recorder.calls.clear()
    recorder.verdict = None
    assert deploy(options) == 0
    new = f"{project_name}-web-2"  # Compose numbers max+1; the failed ones were removed
    assert [c[0] for c in recorder.calls] == ["before_deploy", "check_health", "before_switch", "after_switch",
                                              "after_deploy"]
    assert recorder.calls[2] == ("before_switch", "web", old, new)
    assert recorder.calls[-1] == ("after_deploy", "web", "deployed")
    assert get_version(port) == "v2"
