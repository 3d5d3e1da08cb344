"""`compose-atomic init` on realistic compose files (tests/init_cases/).

The written files must only gain lines (comments, anchors, quotes, CRLF and the
missing final newline all survive), the annotations must pass `compose-atomic check`
(which runs the real `docker compose config`), and a second run changes nothing.
"""

from __future__ import annotations

import difflib
import shutil
from pathlib import Path

import pytest
import yaml

from compose_atomic.config import full_schema, schema_problems
from compose_atomic.init.detect import (Service, image_name, interpolate, is_postgres, parse_port,
                                        web_port)
from compose_atomic.init.edit import scalar
from conftest import run_cli

CASES = Path(__file__).resolve().parent / "init_cases"


def copy_case(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    shutil.copytree(CASES / name, target)
    return target


def read_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def only_added_lines(before: bytes, after: bytes) -> bool:
    a, b = before.splitlines(keepends=True), after.splitlines(keepends=True)
    ops = difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes()
    return all(tag in ("equal", "insert") for tag, *_ in ops)


def annotations(path: Path) -> dict:
    data = yaml.safe_load(path.read_text())
    found = {name: svc["x-atomic"] for name, svc in data["services"].items()
             if isinstance(svc, dict) and "x-atomic" in svc}
    if "x-atomic" in data:
        found["<project>"] = data["x-atomic"]
    return found


EXPECTED = {
    "django-postgres": ("compose.yaml", {
        "web": {"route": {"port": 8000}, "health": {"path": "/healthz"}, "monitor": "10s", "drain": "30s"},
        "db": {"backup": {"schedule": "0 3 * * *", "keep": {"last": 3, "daily": 7, "weekly": 4, "monthly": 6},
                          "verify": "restore"}},
        "<project>": {"proxy": {"ports": ["80:80", "443:443"]}},
    }),
    "node-caddy": ("docker-compose.yml", {
        "app": {"route": {"port": 3000, "host": ["${SHOP_DOMAIN:-shop.example.com}", "www.shop.example.com"]},
                "health": {"path": "/"}, "monitor": "10s", "drain": "30s"},
        "postgres": {"backup": {"schedule": "0 3 * * *", "keep": {"last": 3, "daily": 7, "weekly": 4,
                                                                 "monthly": 6}, "verify": "restore"}},
        "<project>": {"proxy": {"image": "${CADDY_IMAGE:-caddy:2.8-alpine}", "ports": ["80:80", "443:443"]}},
    }),
    "traefik-labels": ("compose.yml", {
        "api": {"route": {"port": 8080, "host": "api.example.com"}, "health": {"path": "/health"},
                "monitor": "10s", "drain": "30s"},
        "tsdb": {"backup": {"schedule": "0 3 * * *", "keep": {"last": 3, "daily": 7, "weekly": 4,
                                                             "monthly": 6}, "verify": "restore"}},
        "<project>": {"proxy": {"ports": ["80:80", "443:443"]}},
    }),
    "nginx-static": ("compose.yaml", {
        "site": {"route": {"port": 80}, "health": {"path": "/"}, "monitor": "10s", "drain": "30s"},
        "landing": {"route": {"port": 80}, "health": {"path": "/"}, "monitor": "10s", "drain": "30s"},
        "<project>": {"proxy": {"ports": ["80:80", "443:443"]}},
    }),
    "annotated": ("compose.yaml", {
        "web": {"route": {"port": 8000}, "health": {"path": "/up"}},
        "db": {"backup": {"schedule": "0 3 * * *", "keep": {"last": 3, "daily": 7, "weekly": 4,
                                                           "monthly": 6}, "verify": "restore"}},
        "<project>": {"proxy": {"ports": ["8080:80"]}},
    }),
}


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_init_writes_valid_annotations_and_only_adds_lines(case, tmp_path):
    folder = copy_case(case, tmp_path)
    before = read_bytes(folder)
    result = run_cli("init", "--yes", cwd=folder, timeout=60)
    assert result.returncode == 0, result.stderr
    after = read_bytes(folder)
    main, expected = EXPECTED[case]
    assert after[main] != before[main]
    for name in before:
        assert only_added_lines(before[name], after[name]), f"{name} lost or changed a line"
    assert annotations(folder / main) == expected
    # what init wrote is what `check` accepts, through the real `docker compose config`
    check = run_cli("check", "--json", cwd=folder, timeout=60)
    assert check.returncode == 0, check.stderr
    # a second run proposes nothing and changes nothing
    again = run_cli("init", "--yes", cwd=folder, timeout=60)
    assert again.returncode == 0, again.stderr
    assert "nothing to add" in again.stderr
    assert read_bytes(folder) == after


def test_dry_run_prints_the_diff_explains_and_warns_but_writes_nothing(tmp_path):
    folder = copy_case("django-postgres", tmp_path)
    before = read_bytes(folder)
    result = run_cli("init", "--dry-run", cwd=folder, timeout=60)
    assert result.returncode == 0, result.stderr
    assert read_bytes(folder) == before
    assert result.stdout.startswith("--- a/compose.yaml\n+++ b/compose.yaml\n")
    assert "+    x-atomic:\n+      route:\n+        port: 8000\n" in result.stdout
    assert "compose.override.yaml" not in result.stdout  # db's backup goes to the base file
    err = result.stderr
    assert "web: web app on port 8000 (from the healthcheck URL http://localhost:8000/healthz)" in err
    assert "worker: no port" in err and "redis: redis keeps its data" in err
    assert "db: PostgreSQL (image postgres:16-alpine)" in err
    # the blocker names the file and line to edit, and the fix
    assert 'warning: web: compose.yaml:19: ports "8000:8000"' in err
    assert "fix: remove ports:" in err
    # the global --dry-run works too
    assert run_cli("--dry-run", "init", cwd=folder, timeout=60).stdout == result.stdout


def test_blockers_container_name_no_healthcheck_and_existing_proxy(tmp_path):
    folder = copy_case("node-caddy", tmp_path)
    err = run_cli("init", "--dry-run", cwd=folder, timeout=60).stderr
    assert "warning: app: docker-compose.yml:7: container_name: shop-app" in err
    assert "fix: remove container_name" in err
    assert "warning: app: no Docker healthcheck" in err and 'http://localhost:3000/' in err
    assert "warning: caddy: docker-compose.yml:17: Caddy and compose-atomic's proxy" in err
    assert "then remove service caddy" in err


def test_a_flow_style_service_gets_a_snippet_to_paste(tmp_path):
    folder = copy_case("traefik-labels", tmp_path)
    result = run_cli("init", "--yes", cwd=folder, timeout=60)
    assert "add by hand in compose.yml services.adminer" in result.stderr
    assert "  adminer: {image: \"adminer:4\", ports: [\"8081:8080\"]}\n" in (folder / "compose.yml").read_text()


def test_without_a_terminal_init_refuses_to_write_without_yes(tmp_path):
    folder = copy_case("nginx-static", tmp_path)
    before = read_bytes(folder)
    result = run_cli("init", cwd=folder, timeout=60, input="")
    assert result.returncode == 2
    assert "not writing without --yes" in result.stderr and "Traceback" not in result.stderr
    assert read_bytes(folder) == before


def test_no_compose_file_and_bad_yaml_are_clear_errors(tmp_path):
    result = run_cli("init", cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and "no compose file found" in result.stderr
    (tmp_path / "compose.yaml").write_text("services:\n  web:\n    image: [oops\n")
    result = run_cli("init", "--dry-run", cwd=tmp_path, timeout=60)
    assert result.returncode == 2
    assert "compose.yaml:" in result.stderr and "not valid YAML" in result.stderr
    assert "Traceback" not in result.stderr


# ---- pure functions -----------------------------------------------------------


def test_parse_port_forms():
    assert parse_port("8000").published is None
    assert (parse_port("8000:80").published, parse_port("8000:80").target) == ("8000", 80)
    assert parse_port("127.0.0.1:5432:5432/tcp").published == "5432"
    assert parse_port({"target": 80, "published": 8080}).published == "8080"
    assert parse_port(3000).target == 3000


def test_interpolation_and_image_names():
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${POSTGRES_IMAGE:-postgres:17-alpine}", env) == "postgres:17-alpine"
    assert interpolate("${EMPTY-keep}/${EMPTY:-dflt}/$SET/$$", env) == "/dflt/x/$"
    assert image_name("docker.io/library/postgres:17-alpine@sha256:abc") == "postgres"
    assert image_name("ghcr.io/acme/api:1.2") == "api"


def test_a_postgres_client_is_not_a_postgres_server():
    client = Service("app", {"environment": {"POSTGRES_PASSWORD": "x", "POSTGRES_HOST": "db"},
                             "ports": ["5432"]}, {})
    assert is_postgres(client) is None
    custom = Service("db", {"build": "./db", "environment": ["POSTGRES_PASSWORD=x"],
                            "healthcheck": {"test": "pg_isready"}}, {})
    assert "pg_isready" in is_postgres(custom)


def test_web_port_sources():
    assert web_port(Service("a", {"command": "gunicorn app:app -b 0.0.0.0:9000"}, {}))[0] == 9000
    assert web_port(Service("a", {"environment": {"VIRTUAL_PORT": "4000"}, "expose": ["5000"]}, {}))[0] == 4000
    assert web_port(Service("a", {"expose": ["9229", "3000"]}, {}))[0] == 3000
    assert web_port(Service("worker", {"image": "python:3.12", "command": "celery worker"}, {})) is None


def test_scalars_read_the_same_in_yaml_1_1_and_1_2():
    assert scalar("80:80") == '"80:80"'  # YAML 1.1 would read 22:22 as a number
    assert scalar("0 3 * * *") == '"0 3 * * *"'
    assert scalar("10s") == "10s" and scalar("/healthz") == "/healthz" and scalar("on") == '"on"'


def test_proposed_annotations_validate_against_the_schema(tmp_path):
    folder = copy_case("django-postgres", tmp_path)
    run_cli("init", "--yes", cwd=folder, timeout=60)
    config = yaml.safe_load((folder / "compose.yaml").read_text())
    assert list(schema_problems(config, full_schema())) == []


def test_getting_started_shows_what_init_really_prints(tmp_path):
    doc = (Path(__file__).resolve().parent.parent / "docs" / "getting-started.md").read_text()
    start = doc.index("```text\n") + len("```text\n")
    shown = doc[start:doc.index("```", start)]
    folder = copy_case("django-postgres", tmp_path)
    printed = run_cli("init", "--dry-run", cwd=folder, timeout=60).stderr
    assert printed.replace("init: dry run, nothing written\n", "") == shown, \
        "update the example in docs/getting-started.md"


def test_explicit_files_and_a_service_defined_only_in_a_later_file(tmp_path):
    folder = copy_case("django-postgres", tmp_path)
    (folder / "compose.prod.yaml").write_text(
        "# production additions\nservices:\n  docs:\n    image: nginx:1.27-alpine\n    expose: [\"80\"]\n"
        "    healthcheck:\n      test: [\"CMD\", \"wget\", \"-qO-\", \"http://localhost/\"]\n")
    files = ("-f", "compose.yaml", "-f", "compose.prod.yaml")
    result = run_cli(*files, "init", "--yes", cwd=folder, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "init: read compose.yaml, compose.prod.yaml\n" in result.stderr  # no override: -f was given
    assert annotations(folder / "compose.prod.yaml") == {
        "docs": {"route": {"port": 80}, "health": {"path": "/"}, "monitor": "10s", "drain": "30s"}}
    assert "docs" not in annotations(folder / "compose.yaml")
    assert (folder / "compose.override.yaml").read_bytes() == (CASES / "django-postgres" / "compose.override.yaml").read_bytes()
    check = run_cli(*files, "check", cwd=folder, timeout=60)
    assert check.returncode == 0, check.stderr


def test_parse_caddyfile():
    from compose_atomic.init.detect import parse_caddyfile

    text = ("{\n  email ops@example.com\n}\n(common) {\n  encode gzip\n}\n"
            "https://api.example.com:443 {\n  import common\n  reverse_proxy /v1/* api:8080\n}\n"
            ":80 {\n  reverse_proxy http://web:3000 # plain\n}\n")
    assert parse_caddyfile(text) == {"api": (8080, ["api.example.com"]), "web": (3000, [])}


@pytest.mark.parametrize("body", [
    'services:\n  web:\n    ports: "8000:8000"\n    expose: 80\n    volumes: x\n    environment: FOO\n'
    '    healthcheck: yes\n    labels: 3\n    depends_on: 7\n    image: 5\n',
    "services:\n  redis:\n  web:\n    image: nginx\n",
    "x-atomic: 3\nservices:\n  web:\n    image: nginx\n",
    "services:\n  web: &w\n    image: nginx\n  web2: *w\n",
    "services:\n  web: {image: nginx}\n",
])
def test_odd_but_parseable_files_never_crash(body, tmp_path):
    from compose_atomic.init.detect import plan_project, read_file
    from compose_atomic.init.edit import apply_plan

    (tmp_path / "compose.yaml").write_text(body)
    files = [read_file(tmp_path / "compose.yaml")]
    edits = apply_plan(files, plan_project(files, {}))
    for text in edits.texts.values():
        yaml.safe_load(text)  # still YAML


def test_an_empty_x_atomic_counts_as_annotated(tmp_path):
    (tmp_path / "compose.yaml").write_text("services:\n  web:\n    image: nginx\n    x-atomic: {}\n")
    result = run_cli("init", "--yes", cwd=tmp_path, timeout=60)
    assert result.returncode == 0 and "nothing to add" in result.stderr


def test_json_report(tmp_path):
    import json

    folder = copy_case("annotated", tmp_path)
    report = json.loads(run_cli("init", "--dry-run", "--json", cwd=folder, timeout=60).stdout)
    assert report["files"] == ["compose.yaml"] and report["written"] == []
    assert list(report["annotations"]["services"]) == ["db"] and report["annotations"]["project"] == {}
    assert report["diff"].startswith("--- a/compose.yaml") and report["notes"][0].startswith("web: already")
    written = json.loads(run_cli("init", "--yes", "--json", cwd=folder, timeout=60).stdout)
    assert written["written"] == ["compose.yaml"]
