"""compose-atomic prune on the real engine: only this project's unused images go, the last N releases stay."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import uuid

import pytest
import yaml

from compose_atomic.ops.prune import releases
from conftest import IMAGE_BUSYBOX, docker, run_cli

REPO = "compose-atomic-testbed/app"


def test_releases_are_deployed_images_newest_first():
    history = [
        {"service": "web", "outcome": "deployed", "old_image_id": "i0", "new_image_id": "i1"},
        {"service": "web", "outcome": "rolled-back", "old_image_id": "i1", "new_image_id": "bad"},
        {"service": "other", "outcome": "deployed", "old_image_id": "x0", "new_image_id": "x1"},
        {"service": "web", "outcome": "deployed", "old_image_id": "i1", "new_image_id": "i2"},
        {"service": "web", "outcome": "deployed", "old_image_id": "i2", "new_image_id": "i1"},  # rollback to i1
    ]
    order, named = releases(history, "web")
    assert order == ["i1", "i2", "i0"]  # i1 served last, so it is the newest release
    assert named == {"i0", "i1", "i2", "bad"}


def build(tag: str, *labels: str) -> str:
    text = f"FROM {IMAGE_BUSYBOX}\nLABEL compose-atomic-test={tag}\n" + "".join(f"LABEL {lab}\n" for lab in labels)
    proc = subprocess.run(["docker", "build", "-q", "-t", tag, "-"], input=text, text=True, capture_output=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def exists(image_id: str) -> bool:
    return docker("image", "inspect", image_id, check=False).returncode == 0


@pytest.fixture
def images(project_name, request):
    """Seven releases of this project, three of another project, one Compose built for the other one."""
    other = f"catest-{uuid.uuid4().hex[:8]}"
    made = {"ours": [build(f"{REPO}:{project_name}-r{n}") for n in range(1, 8)],
            "bad": build(f"{REPO}:{project_name}-bad"),
            "theirs": [build(f"{REPO}:{other}-r{n}") for n in range(1, 4)],
            "theirs_built": build(f"{other}-web", f"com.docker.compose.project={other}",
                                  "com.docker.compose.service=web")}
    made["other"] = other

    def cleanup():
        docker("rm", "-f", f"{project_name}-keeper", f"{project_name}-web-9", check=False)
        ids = made["ours"] + [made["bad"]] + made["theirs"] + [made["theirs_built"]]
        docker("rmi", "-f", *ids, check=False)
    request.addfinalizer(cleanup)
    return made


@pytest.mark.docker
def test_prune_keeps_the_last_releases_and_every_other_project(project_name, tmp_path, images):
    ours, bad = images["ours"], images["bad"]
    doc = {"services": {"web": {"image": f"{REPO}:{project_name}-r7", "command": ["sleep", "3600"], "init": True,
                                "x-atomic": {"health": {"port": 8080}}}},
           "x-atomic": {"retain": {"releases": 3}}}
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(doc))
    up = run_cli("-p", project_name, "up", "-d", cwd=tmp_path)  # Compose creates web-1 from r7
    assert up.returncode == 0, up.stderr

    # The history of seven deploys (r1 -> r7), one rejected release, and one deploy of an image
    # that another project built: that image is the other project's, whatever our history says.
    lines, previous = [], ours[0]
    for n, image in enumerate(ours[1:], start=2):
        lines.append({"time": f"2026-12-01T10:0{n}:00+0000", "service": "web", "outcome": "deployed",
                      "old_image_id": previous, "new_image_id": image, "new_container": f"{project_name}-web-{n}"})
        previous = image
    lines.insert(3, {"time": "2026-12-01T10:03:30+0000", "service": "web", "outcome": "rolled-back",
                     "old_image_id": ours[2], "new_image_id": bad, "new_container": f"{project_name}-web-9"})
    lines.insert(1, {"time": "2026-12-01T10:02:30+0000", "service": "web", "outcome": "rolled-back",
                     "old_image_id": ours[1], "new_image_id": images["theirs_built"]})
    state = tmp_path / ".compose-atomic" / "deploy" / project_name
    state.mkdir(parents=True, exist_ok=True)
    (state / "history.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))

    # r2 is used by a stopped container of no project: an image a container uses never goes.
    docker("create", "--name", f"{project_name}-keeper", ours[1], "true")
    # The container the rejected deploy left, stopped; the service's own container runs.
    docker("create", "--name", f"{project_name}-web-9", "--label", f"com.docker.compose.project={project_name}",
           "--label", "com.docker.compose.service=web", bad, "true")

    dry = run_cli("-p", project_name, "prune", "--dry-run", "--json", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["keep"] == 3 and plan["dry_run"] is True
    # r1, r3, r4, and the rejected image: only the container this prune removes used it.
    assert sorted(i["id"] for i in plan["images"]) == sorted([ours[0], ours[2], ours[3], bad])
    kept = {i["id"]: i["reason"] for i in plan["kept"]}
    assert kept[ours[6]] == "a container uses it" and kept[ours[1]] == "a container uses it"
    assert kept[ours[5]] == kept[ours[4]] == "one of the last 3 releases"
    assert [c["name"] for c in plan["containers"]] == [f"{project_name}-web-9"]
    assert any(images["other"] in s for s in plan["skipped"])
    assert all(exists(i) for i in ours + [bad])  # a dry run removes nothing

    wider = json.loads(run_cli("-p", project_name, "prune", "--dry-run", "--keep", "6", "--json", cwd=tmp_path).stdout)
    assert sorted(i["id"] for i in wider["images"]) == sorted([ours[0], bad])  # r1 is the 7th newest release

    done = run_cli("-p", project_name, "prune", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "removed\tcontainer\tweb" in done.stdout and "removed\timage\tweb" in done.stdout
    assert [exists(i) for i in ours] == [False, True, False, False, True, True, True]
    assert not exists(bad) and docker("ps", "-aq", "--filter", f"name={project_name}-web-9").stdout.strip() == ""
    assert exists(images["theirs_built"]) and all(exists(i) for i in images["theirs"])
    again = json.loads(run_cli("-p", project_name, "prune", "--dry-run", "--json", cwd=tmp_path).stdout)
    assert again["images"] == [] and again["containers"] == [] and again["freed_bytes"] == 0
    running = docker("ps", "--format", "{{.Names}}", "--filter", f"label=com.docker.compose.project={project_name}")
    assert running.stdout.split() == [f"{project_name}-web-1"]


def test_old_snapshots_follow_their_rule(tmp_path):
    from compose_atomic.ops.prune import _old_snapshots
    from compose_atomic.project import ComposeOptions, Project

    config = {"services": {"db": {"image": "postgres"},
                           "web": {"image": "x", "x-atomic": {"migrate": {"database": "db", "command": "true",
                                                                           "keep_snapshots": 2}}}}}
    project = Project("p", ComposeOptions(), config, working_dir=tmp_path)
    snapshots = tmp_path / ".compose-atomic" / "snapshots"
    snapshots.mkdir(parents=True)
    old = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    for n in range(4):
        for reason in ("pre-migrate", "manual"):
            name = f"db-{reason}-{n}"
            (snapshots / f"{name}.dump").write_bytes(b"x" * 10)
            (snapshots / f"{name}.json").write_text(json.dumps({
                "name": name, "created": (old + dt.timedelta(days=n)).isoformat(), "reason": reason,
                "database_service": "db", "size": 10}))
    found = _old_snapshots(project)
    assert [s["name"] for s in found] == ["db-pre-migrate-0", "db-pre-migrate-1"]  # manual ones never go
    assert found[0]["size"] > 10
