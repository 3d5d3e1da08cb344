"""`compose-atomic lint` starts without what it does not use (issue 14: a small file under 120 ms).

Each check runs the real command line in a fresh interpreter and reads its ``sys.modules``
at the end: a top-level import added anywhere on the start-up path (a plugin module, the CLI,
the linter) fails here rather than slowly eating the start-up time bench/lint measures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Docker, HTTP and database machinery, the plugin metadata reader (it pulls in email, zipfile
# and csv), and what only a compose file, a schema or a .squawk.toml needs.
NEVER = ["python_on_whales", "httpx", "psycopg", "importlib.metadata", "email", "yaml", "tomllib",
         "importlib.resources", "compose_atomic.docker", "compose_atomic.backup.generate",
         "compose_atomic.pitr.generate", "compose_atomic.deploy.rollout"]

PROBE = """
import json, sys
sys.argv = ["compose-atomic", *json.loads(sys.argv[1])]
from compose_atomic.cli import main
try:
    main()
except SystemExit as exit:
    code = exit.code
lazy = {name: type(sys.modules[name]).__name__ for name in ("pglast.ast", "pglast.enums") if name in sys.modules}
print(json.dumps({"code": code, "modules": sorted(sys.modules), "lazy": lazy}), file=sys.stderr)
"""


def probe(args: list[str], cwd: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("COMPOSE_FILE", "COMPOSE_ATOMIC_LOAD_PLUGINS")}
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], cwd=cwd, env={**env, "NO_COLOR": "1"},
                          capture_output=True, text=True, timeout=120)
    return json.loads(proc.stderr.strip().splitlines()[-1])


@pytest.fixture
def migration(tmp_path) -> Path:
    (tmp_path / "0001.sql").write_text("ALTER TABLE users ADD COLUMN email text NOT NULL DEFAULT '';\n"
                                       "CREATE INDEX users_email ON users (email);\n")
    return tmp_path


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_lint_imports_no_docker_http_database_or_metadata_machinery(migration, fmt):
    result = probe(["lint", "--format", fmt, "0001.sql"], migration)
    assert result["code"] == 1  # the findings are there: it did lint
    loaded = set(result["modules"])
    unwanted = sorted(m for m in loaded for top in NEVER if m == top or m.startswith(top + "."))
    assert unwanted == [], f"`compose-atomic lint` start-up imports {unwanted}"
    # pglast's node classes and enums are built only when something asks for them
    assert result["lazy"] == {"pglast.ast": "_LazyModule", "pglast.enums": "_LazyModule"}
    assert not any(m.startswith("pglast.enums.") for m in loaded)


def test_plan_still_gets_pglast_nodes(migration):
    """--plan builds SQL with pglast's nodes and enums: the deferred modules load on use."""
    result = probe(["lint", "--plan", "0001.sql"], migration)
    assert result["code"] == 0
    assert "pglast.enums.parsenodes" in result["modules"]
    assert result["lazy"] == {"pglast.ast": "module", "pglast.enums": "module"}


def test_the_entry_point_scan_finds_what_importlib_metadata_finds():
    """compose_atomic.plugins reads entry points without importlib.metadata: same entries,
    same order, for every group installed here (console_scripts, pytest11, compose_atomic...)."""
    import importlib.metadata

    from compose_atomic.plugins import _scan_is_exact, entry_points

    assert _scan_is_exact()
    groups = sorted({ep.group for dist in importlib.metadata.distributions() for ep in dist.entry_points})
    assert "console_scripts" in groups
    for group in [*groups, "compose_atomic"]:
        ours = [(ep.name, ep.value, ep.dist.name) for ep in entry_points(group)]
        theirs = [(ep.name, ep.value, ep.dist.name) for ep in importlib.metadata.entry_points(group=group)]
        assert ours == theirs, group
