"""`compose-atomic init` on realistic compose files (tests/init_cases/).

The written files must only gain lines (comments, anchors, quotes, CRLF and the
missing final newline all survive), the annotations must pass `compose-atomic check`
(which runs the real `docker compose config`), and a second run changes nothing.
"""

from __future__ import annotations

import difflib
import subprocess
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
        # landing would take the same requests as site (neither has a host name): no route
        "site": {"route": {"port": 80}, "health": {"path": "/"}, "monitor": "10s", "drain": "30s"},
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
    assert "worker: a worker (its command runs" in err and "redis: redis keeps its data" in err
    assert "db: PostgreSQL (image postgres:16-alpine, the official PostgreSQL image)" in err
    # the blocker names the file and line to edit, and the fix
    assert 'warning: web: compose.yaml:19: ports "8000:8000"' in err
    assert "fix: remove it (the proxy publishes 80 and 443" in err
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
    folder, _, files = corpus_case("twenty", tmp_path)
    printed = run_in(folder, *files, "init", "--dry-run")
    assert printed.stderr.replace("init: dry run, nothing written\n", "") == shown, \
        "update the example in docs/getting-started.md"
    diff = doc[doc.index("```diff\n") + len("```diff\n"):]
    assert diff[:diff.index("```")] in printed.stdout
    # and the next steps on the same file, as the page shows them
    assert run_in(folder, *files, "init", "--yes").returncode == 0
    check = run_in(folder, *files, "check")
    assert check.returncode == 0 and f"```text\n{check.stdout}{check.stderr}```" in doc, check.stderr
    generated = run_in(folder, *files, "backup", "generate", "-o", "compose.backup.yml")
    assert generated.returncode == 0, generated.stderr
    shown = (generated.stdout + generated.stderr).replace(str(folder) + "/", "")
    assert f"```text\n{shown}```" in doc


def test_explicit_files_and_a_service_defined_only_in_a_later_file(tmp_path):
    folder = copy_case("django-postgres", tmp_path)
    (folder / "compose.prod.yaml").write_text(
        "# production additions\nservices:\n  docs:\n    image: nginx:1.27-alpine\n    expose: [\"80\"]\n"
        "    labels: [\"traefik.http.routers.docs.rule=Host(`docs.example.com`)\"]\n"
        "    healthcheck:\n      test: [\"CMD\", \"wget\", \"-qO-\", \"http://localhost/\"]\n")
    files = ("-f", "compose.yaml", "-f", "compose.prod.yaml")
    result = run_cli(*files, "init", "--yes", cwd=folder, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "init: read compose.yaml, compose.prod.yaml\n" in result.stderr  # no override: -f was given
    assert annotations(folder / "compose.prod.yaml") == {
        "docs": {"route": {"port": 80, "host": "docs.example.com"}, "health": {"path": "/"},
                 "monitor": "10s", "drain": "30s"}}
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


# ---- the corpus: compose files that self-hosted projects publish (tests/init_corpus/) ----
#
# Each folder holds a reduced reproduction, written by hand, of a public project's compose
# file (its header names the repository, path and commit), the files it needs (.env, a
# Caddyfile, env files) and expected.yaml: the routes and backups a person would choose,
# written by hand. No container is started: `check` runs the real `docker compose config`.

CORPUS = Path(__file__).resolve().parent / "init_corpus"
CORPUS_CASES = sorted(p.name for p in CORPUS.iterdir() if (p / "expected.yaml").is_file())
#: Password forms `backup generate` does not take yet: the backup helper's change (a literal,
#: a pass-through `- POSTGRES_PASSWORD`, an env_file, ${VAR:?message}, handed to the sidecar as
#: a 0600 file in the state directory) is pending; these steps flip to passing when it lands.
PENDING_PASSWORDS: set[str] = set()


def corpus_case(name: str, tmp_path: Path) -> tuple[Path, dict, list[str]]:
    folder = tmp_path / name
    shutil.copytree(CORPUS / name, folder)
    expected = yaml.safe_load((folder / "expected.yaml").read_text())
    (folder / "expected.yaml").unlink()
    main = expected.get("files") or [next(p.name for p in sorted(folder.iterdir())
                                          if p.suffix in (".yml", ".yaml") and p.is_file())]
    files = [arg for f in main for arg in ("-f", f)]
    return folder, expected, files


def run_in(folder: Path, *args: str) -> "subprocess.CompletedProcess":
    return run_cli(*args, cwd=folder, env={"PWD": str(folder)}, timeout=120)


def chosen(path: Path) -> tuple[dict, list[str], dict]:
    data = yaml.safe_load(path.read_text())
    routes, backups = {}, []
    for name, service in data["services"].items():
        annotation = (service or {}).get("x-atomic") or {}
        if "route" in annotation:
            routes[name] = dict(annotation["route"], health=annotation["health"]["path"])
        if "backup" in annotation:
            backups.append(name)
    return routes, backups, data.get("x-atomic", {}).get("proxy") or {}


@pytest.mark.parametrize("case", CORPUS_CASES)
def test_corpus_init_routes_the_entry_point_only(case, tmp_path):
    folder, expected, files = corpus_case(case, tmp_path)
    before = read_bytes(folder)
    result = run_in(folder, *files, "init", "--yes")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    after = read_bytes(folder)
    for name in before:
        assert only_added_lines(before[name], after[name]), f"{name} lost or changed a line"
    main = folder / files[1]
    routes, backups, proxy = chosen(main)
    assert routes == expected["routes"], result.stderr
    assert backups == expected["backups"], result.stderr
    if "proxy" in expected:
        assert proxy == expected["proxy"]
    # one line for every service: routed, or why not
    services = yaml.safe_load(main.read_text())["services"]
    for name in services:
        assert f"  {name}: " in result.stderr, f"no line about {name}"
    again = run_in(folder, *files, "init", "--yes")
    assert again.returncode == 0 and "nothing to add" in again.stderr, again.stderr


def _pending(case: str) -> list:
    expected = yaml.safe_load((CORPUS / case / "expected.yaml").read_text())
    if expected["backups"] and expected.get("password") in PENDING_PASSWORDS:
        return [pytest.mark.xfail(strict=True, reason=f"POSTGRES_PASSWORD is {expected['password']}: pending "
                                                      "the backup helper's fix (backup generate hands such "
                                                      "a password to the sidecar as a 0600 file)")]
    return []


@pytest.mark.parametrize("case", [pytest.param(c, marks=_pending(c)) for c in CORPUS_CASES])
def test_corpus_init_then_backup_generate_then_check(case, tmp_path):
    folder, expected, files = corpus_case(case, tmp_path)
    assert run_in(folder, *files, "init", "--yes").returncode == 0
    if expected["backups"]:
        generated = run_in(folder, *files, "backup", "generate", "-o", "compose.backup.yml")
        if expected.get("password") == "empty":
            # ${POSTGRES_PASSWORD} with nothing to fill it: the database itself would refuse to
            # start; backup generate says which variable to set (exit 2) and writes nothing
            assert generated.returncode == 2 and "Set the variable" in generated.stderr, generated.stderr
            assert not (folder / "compose.backup.yml").exists()
            return
        assert generated.returncode == 0, generated.stderr
        files = [*files, "-f", "compose.backup.yml"]
        sidecars = yaml.safe_load((folder / "compose.backup.yml").read_text())["services"]
        assert {f"{db}-backup" for db in expected["backups"]} <= set(sidecars)
    check = run_in(folder, *files, "check")
    assert check.returncode == 0, check.stderr


def test_trailing_comments_stay_with_their_service(tmp_path):
    folder, _, files = corpus_case("supabase", tmp_path)
    assert run_in(folder, *files, "init", "--yes").returncode == 0
    text = (folder / "docker-compose.yml").read_text()
    auth = text[text.index("\n  auth:\n"):text.index("\n  rest:\n")]
    # the commented-out variables stay the last lines of auth's environment; x-atomic is not
    # added to auth (only kong is routed), and the kong block goes after kong's own lines
    assert auth.rstrip().endswith('# GOTRUE_HOOK_SEND_EMAIL_URI: "http://host.docker.internal:54321/functions/v1/email_sender"')
    kong = text[text.index("\n  kong:\n"):text.index("\n  auth:\n")]
    assert kong.rstrip().endswith("      drain: 30s")


def test_a_new_block_goes_after_the_comments_inside_a_service(tmp_path):
    (tmp_path / "compose.yaml").write_text(
        "services:\n  web:\n    image: nginx\n    ports: [\"8080:80\"]\n    environment:\n      A: 1\n"
        "      # B: 2\n\n  # the database\n  db:\n    image: postgres:16\n"
        "    environment:\n      POSTGRES_PASSWORD: ${DB_PASSWORD}\n")
    assert run_cli("init", "--yes", cwd=tmp_path, timeout=60).returncode == 0
    text = (tmp_path / "compose.yaml").read_text()
    assert "      A: 1\n      # B: 2\n    x-atomic:\n" in text
    assert "      drain: 30s\n\n  # the database\n  db:\n" in text  # that comment introduces db


def test_postgres_images_match_exactly():
    from compose_atomic.images import postgres_image, repository

    for image in ("postgres:16-alpine", "docker.io/library/postgres:18", "bitnami/postgresql:16",
                  "postgis/postgis:13-3.1-alpine", "timescale/timescaledb:latest-pg16",
                  "pgvector/pgvector:pg16", "supabase/postgres:15.8.1.085",
                  "ghcr.io/immich-app/postgres:14-vectorchord0.4.3@sha256:abc",
                  "compose-atomic-testbed/postgres:15"):
        assert postgres_image(image), image
    for image in ("postgrest/postgrest:v14.5", "supabase/postgres-meta:v0.95.2",
                  "prometheuscommunity/postgres-exporter", "prodrigestivill/postgres-backup-local:16",
                  "supabase/supavisor:2.7.4", "ghcr.io/acme/postgres-tools:1", ""):
        assert postgres_image(image) is None, image
    assert repository("localhost:5000/team/app:1") == "localhost:5000/team/app"
    assert repository("index.docker.io/library/nginx") == "nginx"


def test_image_facts_and_the_healthcheck_line(tmp_path):
    from compose_atomic.init.detect import ImageFacts, image_facts, plan_project, read_file

    assert image_facts({"Healthcheck": {"Test": ["CMD", "true"]}, "ExposedPorts": {"80/tcp": {}}}) == \
        ImageFacts(True, (80,))
    assert image_facts({"Healthcheck": {"Test": ["NONE"]}}) == ImageFacts(False, ())
    (tmp_path / "compose.yaml").write_text("services:\n  web:\n    image: shop/web:1\n    ports: [\"8000:8000\"]\n")
    files = [read_file(tmp_path / "compose.yaml")]
    unknown = plan_project(files, {}, {"shop/web:1": None})
    assert any("Docker healthcheck: unknown (image shop/web:1 is not on this machine" in n for n in unknown.notes)
    assert not any("no Docker healthcheck" in w for w in unknown.warnings)
    unasked = plan_project(files, {})  # no engine to ask
    assert any("unknown (Docker could not be asked about image shop/web:1" in n for n in unasked.notes)
    has = plan_project(files, {}, {"shop/web:1": ImageFacts(True)})
    assert any("Docker healthcheck: the image shop/web:1 (inspected on this machine) defines one" in n
               for n in has.notes)
    none = plan_project(files, {}, {"shop/web:1": ImageFacts(False)})
    assert any("no Docker healthcheck (neither the compose file nor the image shop/web:1" in w for w in none.warnings)


def test_a_local_image_is_inspected(tmp_path):
    """The real engine: the test bed's busybox image is here, so init knows, not guesses."""
    from compose_atomic.init.command import local_images
    from compose_atomic.init.detect import read_file

    (tmp_path / "compose.yaml").write_text(
        "services:\n  web:\n    image: compose-atomic-testbed/busybox:1\n    ports: [\"8000:8000\"]\n"
        "  gone:\n    image: compose-atomic-testbed/not-built-anywhere:0\n")
    found = local_images([read_file(tmp_path / "compose.yaml")], {})
    assert found["compose-atomic-testbed/not-built-anywhere:0"] is None
    assert found["compose-atomic-testbed/busybox:1"] is not None
    err = run_cli("init", "--dry-run", cwd=tmp_path, timeout=60).stderr
    assert "unknown (image compose-atomic-testbed/busybox:1" not in err


def test_workers_tcp_services_and_duplicate_ports():
    from compose_atomic.init.detect import Service, web_port, worker_reason

    assert worker_reason(Service("w", {"command": "worker"}, {}))
    assert worker_reason(Service("w", {"command": ["yarn", "worker:prod"]}, {}))
    assert worker_reason(Service("c", {"entrypoint": "/cron.sh"}, {}))
    assert worker_reason(Service("s", {"command": "bundle exec sidekiq -C config/sidekiq.yml"}, {}))
    assert not worker_reason(Service("a", {"command": "server"}, {}))
    assert not worker_reason(Service("h", {"command": "heartbeat --every 5s"}, {}))
    calls = Service("mm", {"image": "mattermost/mattermost-team-edition:10",
                           "ports": ["8065:8065", "8443:8443/udp", "8443:8443/tcp"]}, {})
    assert web_port(calls)[0] == 8065
    assert web_port(Service("x", {"ports": ["8443:8443/udp", "3000:3000", "3000:3000"]}, {}))[0] == 3000


def test_check_rejects_two_routes_for_the_same_requests(tmp_path):
    """Through `check`: the real `docker compose config`, then the cross-service rule (`up` and every
    command that acts on a project validate the same way, through load_valid_project)."""
    (tmp_path / "compose.yaml").write_text(
        "services:\n  auth:\n    image: a\n    x-atomic:\n      route: {port: 9999}\n"
        "  kong:\n    image: k\n    x-atomic:\n      route: {port: 8000}\n")
    result = run_cli("check", cwd=tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    assert 'service "kong": x-atomic.route: matches the same requests as service "auth"' in result.stderr
    assert "Traceback" not in result.stderr


def test_caddyfile_forms_and_nginx_upstreams():
    from compose_atomic.init.detect import parse_caddyfile, parse_nginx_conf

    assert parse_caddyfile("miniflux.example.org\nreverse_proxy miniflux:8080\n") == \
        {"miniflux": (8080, ["miniflux.example.org"])}
    assert parse_caddyfile("{$DOMAIN:blog.example.com}\n# comment\nreverse_proxy http://ghost:2368\n") == \
        {"ghost": (2368, ["${DOMAIN:-blog.example.com}"])}
    assert parse_caddyfile("import sites/*.caddy\n") == {}
    conf = ("upstream app_up { server app:3000; }\n"
            "server {\n  listen 80;\n  server_name shop.example.com www.shop.example.com;\n"
            "  location / { proxy_pass http://app_up; }\n  location /api { proxy_pass http://api:8080/; }\n}\n"
            "server { listen 81; server_name _; location / { proxy_pass http://docs; } }\n")
    assert parse_nginx_conf(conf) == {"app": (3000, ["shop.example.com", "www.shop.example.com"]),
                                      "api": (8080, ["shop.example.com", "www.shop.example.com"]),
                                      "docs": (80, [])}


def test_a_caddyfile_mounted_as_pwd_and_an_nginx_conf_route_the_upstream(tmp_path):
    from compose_atomic.init.detect import plan_project, read_file

    (tmp_path / "nginx.conf").write_text("server { server_name shop.example.com; "
                                         "location / { proxy_pass http://shop:4000; } }\n")
    (tmp_path / "compose.yaml").write_text(
        "services:\n  web:\n    image: nginx:1.27\n    ports: [\"80:80\", \"443:443\"]\n"
        "    volumes: [\"${PWD}/nginx.conf:/etc/nginx/conf.d/default.conf:ro\"]\n"
        "  shop:\n    build: .\n    expose: [\"4000\", \"9229\"]\n"
        "  admin:\n    image: acme/admin:1\n    expose: [\"8080\"]\n")
    plan = plan_project([read_file(tmp_path / "compose.yaml")], {"PWD": str(tmp_path)})
    assert plan.services["shop"]["route"] == {"port": 4000, "host": "shop.example.com"}
    assert "admin" not in plan.services
    assert any(n.startswith("admin: serves HTTP on 8080") and "to other services only" in n for n in plan.notes)


def test_route_host_from_the_apps_base_url():
    from compose_atomic.init.detect import Service, base_url_host

    assert base_url_host(Service("m", {"image": "miniflux/miniflux:2",
                                       "environment": ["BASE_URL=https://rss.example.org/"]}, {})) == \
        ("rss.example.org", "BASE_URL")
    assert base_url_host(Service("g", {"image": "ghost:6", "environment": {"url": "https://${DOMAIN}"}}, {})) == \
        ("${DOMAIN}", "url")
    assert base_url_host(Service("p", {"environment": ["BASE_URL=${BASE_URL}"]},
                                 {"BASE_URL": "https://stats.example.net:8443"})) == ("stats.example.net", "BASE_URL")
    assert base_url_host(Service("p", {"environment": ["BASE_URL=${BASE_URL}"]}, {})) == (None, "BASE_URL")
    assert base_url_host(Service("t", {"environment": {"SERVER_URL": "http://localhost:3000"}}, {})) == \
        (None, "SERVER_URL")
    assert base_url_host(Service("x", {"environment": {"OTHER": "https://a.example"}}, {})) == (None, None)


def test_backup_password_sources(tmp_path):
    from compose_atomic.init.detect import Service, password_source

    def source(config):
        return password_source(Service("db", {"image": "postgres:16", **config}, {}), tmp_path)

    assert source({"environment": {"POSTGRES_PASSWORD_FILE": "/run/secrets/pw"}})[0].startswith("POSTGRES_PASSWORD_FILE")
    assert "Docker secret read from the environment" in source({"environment": {"POSTGRES_PASSWORD": "${PW}"}})[0]
    assert "written in the compose file" in source({"environment": ["POSTGRES_PASSWORD=x"]})[0]
    assert "0600 file in the state directory" in source({"environment": ["POSTGRES_PASSWORD"]})[0]
    (tmp_path / "db.env").write_text("POSTGRES_PASSWORD=x\n")
    assert "env_file db.env" in source({"env_file": "db.env"})[0]
    (tmp_path / "empty.env").write_text("POSTGRES_PASSWORD=\n")
    assert source({"env_file": ["empty.env"]}) == ("POSTGRES_PASSWORD is empty in env_file empty.env", False)
    assert source({"environment": ["POSTGRES_PASSWORD="]}) == ("POSTGRES_PASSWORD is empty", False)
    assert source({}) == ("none found", False)
    assert source({"environment": {"POSTGRES_HOST_AUTH_METHOD": "trust"}})[1]


def test_postgres_helpers_are_not_servers_and_a_custom_server_image_is():
    from compose_atomic.init.detect import Service, is_postgres

    for config in ({"image": "postgrest/postgrest:v14", "environment": {"PGRST_DB_URI": "postgres://db"}},
                   {"image": "supabase/postgres-meta:v0.95", "environment": {"PG_META_DB_HOST": "db"}},
                   {"image": "prodrigestivill/postgres-backup-local:16",
                    "environment": {"POSTGRES_HOST": "db", "POSTGRES_PASSWORD": "x"}},
                   {"image": "prometheuscommunity/postgres-exporter",
                    "environment": {"DATA_SOURCE_NAME": "postgresql://db"}},
                   {"image": "acme/tool:1", "environment": {"POSTGRES_PASSWORD": "x"}, "ports": ["5432"]}):
        assert is_postgres(Service("x", config, {})) is None, config
    custom = Service("db", {"image": "acme/pg:16", "environment": {"POSTGRES_PASSWORD": "x"},
                            "volumes": ["pg:/var/lib/postgresql/data"]}, {})
    assert "not in the table of PostgreSQL images" in is_postgres(custom)
