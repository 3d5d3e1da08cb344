"""compose-atomic status on the real engine, behind the real Caddy proxy; its pure parts beside."""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from conftest import IMAGE_BUSYBOX, docker, run_cli
from test_deploy_support import app_service, free_port, wait_for_version, write_project
from test_prune import remove_project_containers

from compose_atomic.ops.disk import root_from_layers
from compose_atomic.ops.status import _parse_time, ago


def test_ago_and_docker_timestamps():
    assert [ago(s) for s in (5, 65, 3720, 90000)] == ["5s", "1m05s", "1h02m", "1d01h"]
    assert _parse_time("2026-12-01T20:00:00.123456789Z") == _parse_time("2026-12-01T21:00:00+01:00")
    assert _parse_time("0001-01-01T00:00:00Z") is None


def test_data_root_from_the_storage_driver_paths():
    overlay = {"GraphDriver": {"Name": "overlay2", "Data": {"UpperDir": "/srv/docker/overlay2/ab12/diff"}}}
    assert root_from_layers([{"GraphDriver": {}}, overlay]) == "/srv/docker"
    assert root_from_layers([{"GraphDriver": {"Name": "overlayfs", "Data": None}}]) is None  # containerd: ask docker info


def status(tmp_path, project_name, *args):
    started = time.monotonic()
    proc = run_cli("-p", project_name, "status", *args, cwd=tmp_path)
    return proc, time.monotonic() - started


@pytest.mark.docker
def test_status_after_deploys(project_name, tmp_path, request):
    port = free_port()
    side = {"image": IMAGE_BUSYBOX, "command": ["sleep", "3600"], "init": True,
            "logging": {"driver": "json-file", "options": {"max-size": "10m", "max-file": "3"}}}
    services = {"web": app_service("v1"), "side": side}
    write_project(tmp_path, services, proxy_port=port)
    assert run_cli("-p", project_name, "up", cwd=tmp_path).returncode == 0
    wait_for_version(port, "v1")

    image_v2 = f"compose-atomic-testbed/app:{project_name}-v2"
    built = subprocess.run(["docker", "build", "-q", "-t", image_v2, "-"], text=True, capture_output=True,
                           input=f"FROM {IMAGE_BUSYBOX}\nLABEL version=v2\n")
    assert built.returncode == 0, built.stderr
    request.addfinalizer(lambda: (remove_project_containers(project_name), docker("rmi", "-f", image_v2, check=False)))
    services["web"] = app_service("v2", image=image_v2)
    write_project(tmp_path, services, proxy_port=port)
    upgrade = run_cli("-p", project_name, "up", cwd=tmp_path)
    assert upgrade.returncode == 0, upgrade.stderr
    wait_for_version(port, "v2")

    proc, _ = status(tmp_path, project_name, "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    web = next(s for s in data["services"] if s["service"] == "web")
    new_image = json.loads(docker("image", "inspect", image_v2).stdout)[0]["Id"]
    assert web["image"] == image_v2 and web["image_id"] == new_image
    assert web["health"] == "healthy" and web["replicas"] == {"running": 1, "desired": 1}
    assert [c["name"] for c in web["containers"]] == [f"{project_name}-web-2"]
    assert web["since_seconds"] is not None and web["since_seconds"] < 120
    ip = next(iter(json.loads(docker("inspect", f"{project_name}-web-2").stdout)[0]
                   ["NetworkSettings"]["Networks"].values()))["IPAddress"]
    assert web["route"]["proxy_dials"] == [f"{ip}:8080", f"{project_name}-web-2:8080"]
    assert web["route"]["stale_dials"] == []
    assert web["last_deploy"]["outcome"] == "deployed" and web["last_deploy"]["new_image_id"] == new_image
    assert web["logs_unbounded"] is True  # the app sets no logging options
    side_status = next(s for s in data["services"] if s["service"] == "side")
    assert side_status["health"] == "running" and side_status["logs_unbounded"] is False
    assert side_status["last_deploy"] is None and side_status["route"] is None
    assert [(p["role"], p["state"]) for p in data["proxy"]] == [("edge", "running"), ("switch", "running")]
    places = {d["place"]: d for d in data["disk"]}
    assert places["docker"]["path"] == json.loads(docker("info", "--format", "{{json .DockerRootDir}}").stdout)
    assert places["docker"]["free_bytes"] > 0 and places["state"]["free_bytes"] > 0
    assert data["problems"] == ["logs unbounded for web (json-file without max-size grows until the disk is full): "
                                "set logging.options max-size and max-file"], data["problems"]

    # The table: plain without colour under NO_COLOR, data on stdout, nothing on stderr.
    plain, seconds = status(tmp_path, project_name)
    assert plain.returncode == 0 and plain.stderr == ""
    assert "\x1b[" not in plain.stdout
    assert f"route * :8080 -> {ip}:8080 {project_name}-web-2:8080" in plain.stdout
    assert "last deploy" in plain.stdout and "deployed" in plain.stdout
    assert "logs unbounded" in plain.stdout
    assert seconds < 5, f"status took {seconds:.2f}s (the bench measures it quietly: bench/status)"

    # Batched: the whole project costs the same four calls, whatever its number of services.
    from compose_atomic import docker as gateway
    from compose_atomic.ops.status import collect, gather
    from compose_atomic.project import ComposeOptions

    class Recording(gateway.Gateway):
        calls: list = []

        def run(self, command, **kwargs):
            self.calls.append(command.argv[1:3])
            return super().run(command, **kwargs)

    with gateway.use(Recording()) as recording:
        project, view = gather(ComposeOptions(project_name=project_name, project_directory=str(tmp_path)))
        assert [s["service"] for s in collect(project, None, view)["services"]] == ["side", "web"]
    assert sorted(recording.calls) == sorted([("compose", "--project-name"), ("ps", "-aq"),
                                              ("inspect", "--type"), ("image", "inspect")]), recording.calls

    one, _ = status(tmp_path, project_name, "web", "--json")
    assert [s["service"] for s in json.loads(one.stdout)["services"]] == ["web"]

    # What reconcile would fix: a journal left behind, a proxy dialling a container that is gone.
    journal = tmp_path / ".compose-atomic" / "deploy" / project_name / "journal.json"
    journal.write_text(json.dumps({"service": "web", "phase": "switched", "old": [], "new": []}))
    docker("stop", "-t", "0", f"{project_name}-web-2", f"{project_name}-atomic-proxy-switch")
    found = json.loads(status(tmp_path, project_name, "--json")[0].stdout)["problems"]
    assert any("interrupted at step 'switched'" in p and "compose-atomic up" in p for p in found), found
    # web-2 is stopped, but it is the container the deploy put in place, not one it left.
    assert not any("left by deploys" in p for p in found), found
    assert any(p.startswith("web: stopped") for p in found), found
    assert any("the proxy dials" in p for p in found), found
    assert "the proxy's switch is not running; `compose-atomic up` starts it again" in found
    journal.unlink()

    # A route in maintenance, as `compose-atomic maintenance on web` records it.
    (tmp_path / ".compose-atomic" / "proxy" / "maintenance.json").write_text(
        json.dumps({"web": {"message": "back soon", "retry_after": 120}}))
    data = json.loads(status(tmp_path, project_name, "--json")[0].stdout)
    web = next(s for s in data["services"] if s["service"] == "web")
    assert web["route"]["maintenance"] == {"message": "back soon", "retry_after": 120}
    assert any("web is in maintenance" in p and "maintenance off web" in p for p in data["problems"])
    assert "in maintenance (503, Retry-After 120s)" in status(tmp_path, project_name)[0].stdout


@pytest.mark.docker
def test_status_usage_errors(project_name, tmp_path):
    write_project(tmp_path, {"web": app_service("v1")})
    proc, _ = status(tmp_path, project_name, "nope")
    assert proc.returncode == 2 and "no such service: nope" in proc.stderr and "Traceback" not in proc.stderr
    # Never deployed: no containers, nothing in the state directory, and status creates none of it.
    proc, _ = status(tmp_path, project_name, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["services"][0]["health"] == "missing"
    assert not (tmp_path / ".compose-atomic").exists()
    # A bad annotation: the same message as `check` (exit 2), never a traceback.
    write_project(tmp_path, {"web": app_service("v1", x_atomic={"route": "oops"})})
    proc, _ = status(tmp_path, project_name)
    assert proc.returncode == 2, proc.stderr
    assert "x-atomic.route" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.docker
def test_status_reads_backup_age_from_the_sidecars_health_check(project_name, tmp_path):
    """The sidecar here is a stand-in (busybox answering its health check as sidecar.sh does):
    status reads the engine's record of that check, never the backup volume."""
    sleeper = {"image": IMAGE_BUSYBOX, "command": ["sleep", "3600"], "init": True}
    services = {
        "db": {**sleeper, "x-atomic": {"backup": {"schedule": "0 3 * * *"}}},
        "db2": {**sleeper, "x-atomic": {"backup": {"schedule": "@hourly"}}},
        "db-backup": {**sleeper,
                      "labels": {"com.compose-atomic.backup.for": "db", "com.compose-atomic.backup.role": "dump"},
                      "environment": {"BACKUP_SCHEDULE": "0 3 * * *", "BACKUP_MAX_AGE": "129600"},
                      "healthcheck": {"test": ["CMD", "echo", "ok: newest verified backup is 42s old"],
                                      "interval": "1s", "retries": 1}},
    }
    write_project(tmp_path, services)
    assert run_cli("-p", project_name, "up", "-d", "--wait", cwd=tmp_path).returncode == 0
    data = json.loads(status(tmp_path, project_name, "--json")[0].stdout)
    backups = {b["database"]: b for b in data["backups"]}
    db = backups["db"]
    assert db["sidecar"] == f"{project_name}-db-backup-1" and db["ok"] is True
    assert 42 <= db["newest_age_seconds"] < 42 + 60 and db["max_age_seconds"] == 129600
    assert db["schedule"] == "0 3 * * *"
    assert backups["db2"]["sidecar"] is None and "backup list" in backups["db2"]["message"]
    assert "db2: backups are configured but no backup sidecar runs" in data["problems"]
    table = status(tmp_path, project_name)[0].stdout
    assert re.search(r"backup db: newest verified \S+ ago \(limit 1d12h\), schedule 0 3 \* \* \*", table), table


def test_snapshots_per_migrated_database(tmp_path):
    import datetime as dt

    from compose_atomic.ops.status import _snapshots
    from compose_atomic.project import ComposeOptions, Project

    config = {"services": {"db": {"image": "postgres"}, "web": {"x-atomic": {"migrate": {"database": "db"}}}}}
    project = Project("p", ComposeOptions(), config, working_dir=tmp_path)
    assert _snapshots(project, time.time()) == [{"database": "db", "count": 0, "bytes": 0, "newest": None,
                                                 "newest_age_seconds": None}]
    directory = tmp_path / ".compose-atomic" / "snapshots"
    directory.mkdir(parents=True)
    now = dt.datetime.now(dt.timezone.utc)
    for n, size in ((2, 100), (1, 300)):  # hours ago
        name = f"db-{n}"
        (directory / f"{name}.dump").write_bytes(b"x")
        (directory / f"{name}.json").write_text(json.dumps({"name": name, "database_service": "db", "size": size,
                                                            "created": (now - dt.timedelta(hours=n)).isoformat()}))
    found = _snapshots(project, now.timestamp())
    assert found[0]["count"] == 2 and found[0]["bytes"] == 400 and found[0]["newest"] == "db-1"
    assert abs(found[0]["newest_age_seconds"] - 3600) <= 1
