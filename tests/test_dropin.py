"""compose-atomic as a drop-in for `docker compose`, on the real engine."""

from __future__ import annotations

import json
import textwrap

import pytest

from conftest import IMAGE_BUSYBOX, docker, run_cli

PLAIN = f"""
services:
  web:
    image: {IMAGE_BUSYBOX}
    command: ["httpd", "-f", "-p", "8080"]
    labels: {{app: demo}}
    environment: {{GREETING: "${{GREETING:-hello}}"}}
  worker:
    image: {IMAGE_BUSYBOX}
    command: ["sleep", "3600"]
    stop_grace_period: 1s
  extra:
    image: {IMAGE_BUSYBOX}
    command: ["sleep", "3600"]
    profiles: [extra]
"""

IGNORED_LABELS = {"com.docker.compose.project.working_dir", "com.docker.compose.project.config_files"}


def containers(project: str) -> dict[str, dict]:
    """name -> (image, labels, env) for every container of the project."""
    ids = docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={project}").stdout.split()
    if not ids:
        return {}
    found = {}
    for info in json.loads(docker("inspect", *ids).stdout):
        labels = {k: v for k, v in info["Config"]["Labels"].items() if k.startswith("com.docker.compose")}
        found[info["Name"].lstrip("/")] = {
            "image": info["Config"]["Image"],
            "labels": labels,
            "env": sorted(info["Config"]["Env"]),
            "networks": sorted(info["NetworkSettings"]["Networks"]),
            "running": info["State"]["Running"],
        }
    return found


def down(project: str, cwd) -> None:
    docker("compose", "-p", project, "down", "-t", "0", "--remove-orphans", check=False)


@pytest.fixture
def plain_project(tmp_path, project_name):
    (tmp_path / "compose.yaml").write_text(PLAIN)
    return tmp_path


def test_up_on_a_plain_project_is_docker_compose_up(plain_project, project_name):
    """Same containers, names, labels (config-hash included), env and networks, same exit code."""
    reference = docker("compose", "-p", project_name, "--project-directory", str(plain_project),
                       "up", "-d", "--wait", check=False)
    assert reference.returncode == 0, reference.stderr
    expected = containers(project_name)
    subprocess_down = docker("compose", "-p", project_name, "--project-directory", str(plain_project),
                             "down", "-t", "0", check=False)
    assert subprocess_down.returncode == 0
    assert containers(project_name) == {}

    ours = run_cli("-p", project_name, "up", "-d", "--wait", cwd=plain_project)
    assert ours.returncode == 0, ours.stderr
    actual = containers(project_name)
    assert sorted(actual) == sorted(expected) == [f"{project_name}-web-1", f"{project_name}-worker-1"]
    for name, info in expected.items():
        for key in ("image", "env", "networks", "running"):
            assert actual[name][key] == info[key], (name, key)
        strip = lambda labels: {k: v for k, v in labels.items() if k not in IGNORED_LABELS}  # noqa: E731
        assert strip(actual[name]["labels"]) == strip(info["labels"]), name
        assert actual[name]["labels"]["com.docker.compose.config-hash"] == info["labels"]["com.docker.compose.config-hash"]

    # A second `up` changes nothing, as with Compose.
    again = run_cli("-p", project_name, "up", "-d", cwd=plain_project)
    assert again.returncode == 0
    assert {n: c["labels"] for n, c in containers(project_name).items()} == \
           {n: c["labels"] for n, c in actual.items()}


def test_up_keeps_composes_exit_code_and_message(plain_project, project_name):
    ref = docker("compose", "-p", project_name, "up", "-d", "nosuchservice", check=False)
    ours = run_cli("-p", project_name, "up", "-d", "nosuchservice", cwd=plain_project)
    assert ours.returncode == ref.returncode != 0
    assert "nosuchservice" in ours.stderr


def test_global_options_and_environment_reach_compose(plain_project, project_name, tmp_path):
    (plain_project / "override.yaml").write_text("services:\n  web:\n    labels: {tier: front}\n")
    (plain_project / "alt.env").write_text("GREETING=bonjour\n")
    result = run_cli("-f", "compose.yaml", "-f", "override.yaml", "--env-file", "alt.env",
                     "--profile", "extra", "-p", project_name, "up", "-d", cwd=plain_project)
    assert result.returncode == 0, result.stderr
    found = containers(project_name)
    assert sorted(found) == [f"{project_name}-{s}-1" for s in ("extra", "web", "worker")]
    web = json.loads(docker("inspect", f"{project_name}-web-1").stdout)[0]
    assert web["Config"]["Labels"]["tier"] == "front"
    assert "GREETING=bonjour" in web["Config"]["Env"]
    # The same through Compose's variables.
    down(project_name, plain_project)
    result = run_cli("up", "-d", cwd=plain_project, env={
        "COMPOSE_FILE": "compose.yaml:override.yaml", "COMPOSE_PROJECT_NAME": project_name,
        "COMPOSE_PROFILES": "extra"})
    assert result.returncode == 0, result.stderr
    assert len(containers(project_name)) == 3


def test_commands_it_does_not_own_pass_through_with_exit_codes(plain_project, project_name):
    assert run_cli("-p", project_name, "up", "-d", cwd=plain_project).returncode == 0
    ps = run_cli("-p", project_name, "ps", "--format", "json", cwd=plain_project)
    assert ps.returncode == 0
    names = {json.loads(line)["Name"] for line in ps.stdout.splitlines() if line.strip()}
    assert names == {f"{project_name}-web-1", f"{project_name}-worker-1"}

    code = run_cli("-p", project_name, "exec", "-T", "worker", "sh", "-c", "exit 7", cwd=plain_project)
    assert code.returncode == 7
    echo = run_cli("-p", project_name, "exec", "-T", "worker", "echo", "--help", cwd=plain_project)
    assert echo.stdout.strip() == "--help"  # flags after the command are the container's, not ours

    config = run_cli("config", "--services", cwd=plain_project)
    assert config.returncode == 0 and set(config.stdout.split()) == {"web", "worker"}

    for args in (("nosuchcommand",), ("exec", "-T", "nosuchservice", "true"), ("port", "web", "9999")):
        ref = docker("compose", "-p", project_name, "--project-directory", str(plain_project), *args, check=False)
        ours = run_cli("-p", project_name, *args, cwd=plain_project)
        assert ours.returncode == ref.returncode != 0, args
        assert ours.stderr == ref.stderr, args

    assert run_cli("-p", project_name, "down", "-t", "0", cwd=plain_project).returncode == 0
    assert containers(project_name) == {}


ANNOTATED = """
services:
  web:
    image: busybox
    x-atomic:
      route:
        port: 8080
      monitor: 10
  db:
    image: postgres
"""


def test_bad_annotation_names_file_line_service_and_key(tmp_path, docker_engine):
    (tmp_path / "compose.yaml").write_text(ANNOTATED)
    result = run_cli("check", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert 'compose.yaml:8: service "web": x-atomic.monitor: expected a string, found the number 10' in result.stderr
    # `up` refuses the same file before touching anything.
    up = run_cli("up", "-d", cwd=tmp_path)
    assert up.returncode == 2 and "x-atomic.monitor" in up.stderr


def test_the_file_that_sets_a_key_is_named(tmp_path, docker_engine):
    (tmp_path / "compose.yaml").write_text("services:\n  web:\n    image: busybox\n")
    (tmp_path / "compose.override.yaml").write_text(textwrap.dedent("""\
        services:
          web:
            x-atomic:
              strategy: rolling
        """))
    result = run_cli("check", cwd=tmp_path)
    assert result.returncode == 2
    assert "compose.override.yaml:4" in result.stderr
    assert 'Use one of: start-first, stop-first' in result.stderr


def test_unknown_service_reference_is_a_config_error(tmp_path, docker_engine):
    (tmp_path / "compose.yaml").write_text(textwrap.dedent("""\
        services:
          web:
            image: busybox
            x-atomic:
              migrate: {command: [migrate], database: dbb}
          db:
            image: postgres
        """))
    result = run_cli("check", cwd=tmp_path)
    assert result.returncode == 2
    assert 'x-atomic.migrate.database: no service "dbb"' in result.stderr
    assert 'Did you mean "db"?' in result.stderr


def test_included_and_interpolated_annotations_are_read(tmp_path, docker_engine):
    (tmp_path / "web.yaml").write_text(textwrap.dedent("""\
        services:
          web:
            image: busybox
            x-atomic:
              monitor: ${MONITOR:-10s}
        """))
    (tmp_path / "compose.yaml").write_text("include: [web.yaml]\nservices:\n  db:\n    image: postgres\n")
    ok = run_cli("check", "--json", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["services"] == {"web": ["monitor"]}
    bad = run_cli("check", cwd=tmp_path, env={"MONITOR": "soon"})
    assert bad.returncode == 2
    assert 'web.yaml:5: service "web": x-atomic.monitor: "soon" is not a duration' in bad.stderr


def test_compose_errors_are_reported_without_traceback(tmp_path, docker_engine):
    (tmp_path / "compose.yaml").write_text("services:\n  web:\n    image: [unclosed\n")
    result = run_cli("check", cwd=tmp_path)
    assert result.returncode == 2
    assert "Compose could not load the project" in result.stderr
    assert "Traceback" not in result.stderr
