"""compose-atomic prune on the real engine: only this project's unused images go, the last N releases stay."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import uuid

import pytest
import yaml

from compose_atomic.ops.prune import foreign_tags, releases, repository
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


def test_repository_of_a_reference():
    assert repository("registry:5000/acme/web:2.4@sha256:ab") == "registry:5000/acme/web"
    assert repository("registry:5000/acme/web") == "registry:5000/acme/web"
    assert repository("postgres:16") == "postgres"
    assert foreign_tags(["acme/web:1", "postgres:16"], "acme/web") == ["postgres:16"]


def test_left_behind_is_the_losing_side_of_a_recorded_deploy():
    from compose_atomic.ops.prune import left_behind

    def box(name, status="exited", created="2026-12-01T10:00:00.5Z"):
        return {"Name": f"/{name}", "State": {"Status": status}, "Created": created}

    history = [
        {"time": "2026-12-01T10:01:00+0000", "outcome": "deployed", "old_container": "p-web-1", "new_container": "p-web-2"},
        {"time": "2026-12-01T10:02:00+0000", "outcome": "rolled-back", "old_container": "p-web-2", "new_container": "p-web-3"},
        {"time": "2026-12-01T10:03:00+0000", "outcome": "failed", "new_container": "p-api-1"},
    ]
    infos = [box("p-web-1"), box("p-web-2"), box("p-web-3"), box("p-web-4"),
             box("p-api-1", created="2026-12-01T11:00:00Z")]
    # web-1 lost the first deploy; web-3 was rejected; web-2 serves (stopped by a user: it stays);
    # web-4 is unknown; api-1 has the name of a rejected container but was created after it.
    assert [i["Name"] for i in left_behind(history, infos)] == ["/p-web-1", "/p-web-3"]
    assert left_behind(history, [box("p-web-3", status="running")]) == []


def build(tag: str, *labels: str) -> str:
    text = f"FROM {IMAGE_BUSYBOX}\nLABEL compose-atomic-test={tag}\n" + "".join(f"LABEL {lab}\n" for lab in labels)
    proc = subprocess.run(["docker", "build", "-q", "-t", tag, "-"], input=text, text=True, capture_output=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def remove_project_containers(project_name: str) -> None:
    ids = docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={project_name}", check=False).stdout.split()
    if ids:
        docker("rm", "-f", "-v", *ids, check=False)


def exists(image_id: str) -> bool:
    return docker("image", "inspect", image_id, check=False).returncode == 0


@pytest.fixture
def images(project_name, request):
    """Seven releases of this project, three of another project, one Compose built for the other one."""
    other = f"catest-{uuid.uuid4().hex[:8]}"
    made = {"ours": [build(f"{REPO}:{project_name}-r{n}") for n in range(1, 8)],
            "bad": build(f"{REPO}:{project_name}-bad"),
            "moved_from": build(f"compose-atomic-testbed/before-{project_name}:1"),
            "theirs": [build(f"{REPO}:{other}-r{n}") for n in range(1, 4)],
            "theirs_built": build(f"{other}-web", f"com.docker.compose.project={other}",
                                  "com.docker.compose.service=web")}
    made["other"] = other

    def cleanup():  # runs before the project's own teardown: its containers go first, or rmi fails
        docker("rm", "-f", f"{project_name}-keeper", f"{project_name}-web-9", check=False)
        remove_project_containers(project_name)
        ids = made["ours"] + [made["bad"], made["moved_from"]] + made["theirs"] + [made["theirs_built"]]
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

    # r2 is used by a stopped container of no project: an image a container uses never goes.
    docker("create", "--name", f"{project_name}-keeper", ours[1], "true")
    # The container the rejected deploy left, stopped; the service's own container runs.
    docker("create", "--name", f"{project_name}-web-9", "--label", f"com.docker.compose.project={project_name}",
           "--label", "com.docker.compose.service=web", bad, "true")
    start = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=2)  # the history is newer than them

    def at(seconds: int) -> str:
        return (start + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S%z")

    # The history of seven deploys (r1 -> r7), one rejected release, and one deploy of an image
    # that another project built: that image is the other project's, whatever our history says.
    lines, previous = [], ours[0]
    for n, image in enumerate(ours[1:], start=2):
        lines.append({"time": at(10 * n), "service": "web", "outcome": "deployed",
                      "old_image_id": previous, "new_image_id": image, "new_container": f"{project_name}-web-{n}"})
        previous = image
    lines.insert(3, {"time": at(35), "service": "web", "outcome": "rolled-back",
                     "old_image_id": ours[2], "new_image_id": bad, "new_container": f"{project_name}-web-9"})
    lines.insert(1, {"time": at(25), "service": "web", "outcome": "rolled-back",
                     "old_image_id": ours[1], "new_image_id": images["theirs_built"]})
    # Before r1 the service ran an image of another repository: not only a release of ours.
    lines.insert(0, {"time": at(0), "service": "web", "outcome": "deployed",
                     "old_image_id": images["moved_from"], "new_image_id": ours[0]})
    state = tmp_path / ".compose-atomic" / "deploy" / project_name
    state.mkdir(parents=True, exist_ok=True)
    (state / "history.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))


    dry = run_cli("-p", project_name, "prune", "--dry-run", "--json", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert plan["keep"] == 3 and plan["dry_run"] is True
    # r1, r3, r4, and the rejected image: only the container this prune removes used it.
    assert sorted(i["id"] for i in plan["images"]) == sorted([ours[0], ours[2], ours[3], bad])
    kept = {i["id"]: i["reason"] for i in plan["kept"]}
    assert kept[ours[6]] == "a container uses it" and kept[ours[1]] == "a container uses it"
    assert kept[ours[5]] == kept[ours[4]] == "one of the last 3 releases"
    assert kept[images["moved_from"]].startswith("tagged for another repository")
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
    assert exists(images["theirs_built"]) and all(exists(i) for i in images["theirs"]) and exists(images["moved_from"])
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


@pytest.mark.docker
def test_retain_after_deploy_prunes_once_a_deploy_succeeded(project_name, tmp_path, request):
    from test_deploy_support import app_service, write_project

    tags = [f"{REPO}:{project_name}-v{n}" for n in (1, 2, 3)]
    ids = [build(tag) for tag in tags]
    request.addfinalizer(lambda: (remove_project_containers(project_name), docker("rmi", "-f", *ids, check=False)))
    retain = {"retain": {"releases": 1, "after_deploy": True}}
    for n, tag in enumerate(tags):
        write_project(tmp_path, {"web": app_service(f"v{n + 1}", image=tag)}, x_atomic=retain)
        up = run_cli("-p", project_name, "up", cwd=tmp_path)
        assert up.returncode == 0, up.stderr
        if n:
            assert f"Image {tags[n - 1]}  Removed" in up.stderr, up.stderr
        assert [exists(i) for i in ids[:n + 1]] == [False] * n + [True]
    entries = [e["outcome"] for e in json.loads(run_cli("-p", project_name, "history", "--json", cwd=tmp_path).stdout)]
    assert entries == ["deployed", "deployed"]


@pytest.mark.docker
def test_prune_waits_for_no_deploy(project_name, tmp_path):
    import fcntl

    (tmp_path / "compose.yaml").write_text(yaml.safe_dump({"services": {"web": {"image": IMAGE_BUSYBOX}}}))
    lock = tmp_path / ".compose-atomic" / "deploy" / project_name / "lock"
    lock.parent.mkdir(parents=True)
    with open(lock, "a+") as handle:  # what `up` holds while it deploys
        fcntl.flock(handle, fcntl.LOCK_EX)
        (lock.parent / "lock.owner").write_text("pid 4242 since 10:00:00")
        busy = run_cli("-p", project_name, "prune", cwd=tmp_path)
        assert busy.returncode == 1 and "a deploy is running (pid 4242 since 10:00:00)" in busy.stderr
        dry = run_cli("-p", project_name, "prune", "--dry-run", "--json", cwd=tmp_path)
        assert dry.returncode == 0, dry.stderr  # a dry run takes no lock
        assert any("not while pid 4242" in s for s in json.loads(dry.stdout)["skipped"])
    assert run_cli("-p", project_name, "prune", cwd=tmp_path).returncode == 0
