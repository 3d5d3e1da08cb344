"""The gateway's commands are data: tested by their argv; --dry-run is handled in one place."""

from __future__ import annotations

import io

import pytest

from compose_atomic import docker
from compose_atomic.cli import without_lock_wait
from compose_atomic.errors import DockerTimeout, DockerUnavailable
from compose_atomic.project import ComposeOptions, Project


def test_command_builders_build_argument_lists():
    assert docker.stop(9.6, "a", "b").argv == ("docker", "stop", "-t", "10", "a", "b")
    assert docker.stop(10, "a").timeout == 70
    assert docker.remove("a", volumes=True).argv == ("docker", "rm", "-f", "-v", "a")
    assert docker.network_connect("net", "c", aliases=["web", "w"], ip="10.0.0.5").argv == (
        "docker", "network", "connect", "--alias", "web", "--alias", "w", "--ip", "10.0.0.5", "net", "c")
    assert docker.list_service("p", "web").argv[-6:] == (
        "--filter", "label=com.docker.compose.project=p", "--filter", "label=com.docker.compose.service=web",
        "--filter", "label=com.docker.compose.oneoff=False")


def test_only_commands_that_change_something_are_marked_so():
    assert not docker.inspect_containers("a").changes and not docker.logs_tail("a").changes
    assert all(c.changes for c in (docker.start("a"), docker.stop(1, "a"), docker.remove("a"),
                                   docker.network_disconnect("n", "a"), docker.network_connect("n", "a")))


def test_compose_commands_never_carry_dry_run_and_keep_the_users_options(tmp_path):
    options = ComposeOptions(files=("a.yml",), project_name="p", dry_run=True)
    project = Project(name="p", options=options, config={}, working_dir=tmp_path)
    command = project.compose("up", "--no-start", "web")
    assert command.argv == ("docker", "compose", "--file", "a.yml", "--project-name", "p", "up", "--no-start", "web")
    assert command.changes and command.timeout == docker.LONG_TIMEOUT
    assert not project.compose("config", "--hash", "web", changes=False).changes


def test_dry_run_prints_a_command_that_changes_things_and_does_not_run_it():
    echo = io.StringIO()
    result = docker.Gateway(dry_run=True, echo=echo).run(docker.docker("this-would-fail", changes=True))
    assert result.ok and echo.getvalue() == "dry-run: would run docker this-would-fail\n"


def test_a_missing_cli_and_a_hung_call_are_errors_of_their_own():
    gateway = docker.Gateway()
    with pytest.raises(DockerUnavailable, match="not found on PATH"):
        gateway.run(docker.Command(("compose-atomic-no-such-binary",)))
    with pytest.raises(DockerTimeout, match="did not answer within 0.2s"):
        gateway.run(docker.Command(("sleep", "5"), timeout=0.2))


def test_result_says_what_went_wrong_in_one_line():
    result = docker.Result(docker.docker("x"), 1, "out\n", "warning\nError: no such container\n\n")
    assert result.last_line() == "Error: no such container"


@pytest.mark.parametrize("args, kept", [
    (["-d", "--lock-wait", "30s", "web"], ["-d", "web"]),
    (["--lock-wait=30s", "-d"], ["-d"]),
    (["web"], ["web"]),
    (["-d", "--hold-writes", "60s", "--lock-wait=1m", "web"], ["-d", "web"]),
    (["--hold-writes=60s", "web"], ["web"]),
    (["--allow-maintenance", "-d", "web"], ["-d", "web"]),
])
def test_lock_wait_and_its_value_never_reach_compose(args, kept):
    assert without_lock_wait(args) == kept
