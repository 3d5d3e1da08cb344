"""scripts/demo's core path on the real engine, briefly: examples/django-notes (Django under
gunicorn, PostgreSQL 17, Caddy 2.11) deployed as release 1, release 2 (a Django migration)
rolled out under load that reads, writes and keeps a long request in flight, then every
acknowledged write looked up in the database. The demo itself (scripts/demo) is the long run,
with the broken release 3 and a backup.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import IMAGE_CADDY, IMAGE_DJANGO, IMAGE_POSTGRES, ROOT, docker

pytestmark = pytest.mark.docker


def test_demo_core_path_loses_no_request_and_no_acknowledged_write(project_name):
    env = {**os.environ, "IMAGE_POSTGRES": IMAGE_POSTGRES, "IMAGE_CADDY": IMAGE_CADDY, "IMAGE_DJANGO": IMAGE_DJANGO}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py"), "--quick", "--json",
                           "--project", project_name], env=env, capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip(), proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    load, rows = report["load"], report["rows"]
    print(f"demo --quick: {load['requests']} requests ({load['by_kind']}), {load['failed']} failed, "
          f"{rows['acknowledged']} writes acknowledged, {rows['present']} present, {rows['lost']} lost, "
          f"p99 {load['p99_ms']} ms, max {load['max_short_ms']} ms, {load['long_completed']} long")
    assert proc.returncode == 0, (report["problems"], proc.stderr[-3000:])
    assert report["problems"] == []
    assert (report["deploy_v1"], report["deploy_v2"]) == (0, 0)
    assert load["failed"] == 0, load["failures"]
    assert {"1", "2"} <= set(load["versions"]) and load["last_version"] == "2"  # both releases served
    assert load["long_completed"] >= 1 and load["long_failed"] == 0
    assert rows["acknowledged"] > 50 and rows["lost"] == 0 and rows["present"] == rows["acknowledged"], rows
    assert report["migrations"] == ["0001_initial", "0002_note_tag"]
    # Nothing left running: the demo removed its stack (and the proxy) without --keep.
    left = docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={project_name}").stdout.split()
    proxy = docker("ps", "-aq", "--filter", f"label=dev.compose-atomic.proxy={project_name}").stdout.split()
    assert left == [] and proxy == []
    assert not os.path.exists(report["workdir"])


def test_lost_writes_are_counted_by_id_and_key(monkeypatch, tmp_path):
    """The row count's rule, without an engine: a write is present only when a row has its id
    and its key; a row under the same id with another body (an id reused after a restore) is
    a lost write."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("demo", ROOT / "scripts" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    acked = tmp_path / "acked.txt"
    acked.write_text("a-1 1\na-2 2\na-3 3\nb-1 -\n")
    acks = demo.acknowledged(acked)
    monkeypatch.setattr(demo, "capture", lambda *a, **k: "1|note=a-1\n2|note=other\n4|note=a-3\n")
    rows = demo.count_rows([], {}, tmp_path, acks)
    assert (rows["acknowledged"], rows["present"], rows["lost"]) == (4, 1, 3)
    assert rows["lost_examples"] == ["a-2 (id 2)", "a-3 (id 3)", "b-1 (id -1)"]
