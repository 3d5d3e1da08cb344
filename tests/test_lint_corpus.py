"""The labelled corpus (tests/lint_corpus), checked against its labels and against squawk.

Each file starts with ``-- expect: rule ...`` (the findings it must produce, besides the
advisory rules below unless they are listed) and optionally ``-- options: ...`` (flags
given to both tools). squawk-cli's binary runs on the same files in the same test:
on every unsafe case we report at least squawk's core finding, and on safe cases we report
nothing; each place where squawk disagrees is listed below with the reason.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from compose_atomic.lint import LintConfig, Linter, parse_pg_version
from compose_atomic.lint.registry import get_rules

CORPUS = Path(__file__).resolve().parent / "lint_corpus"
ADVISORY = {"require-lock-timeout", "prefer-robust-stmts"}
INFO = {"not-analysed"}  # info level: says what was not analysed, never a problem in itself
FILES = sorted(CORPUS.glob("*/*.sql"))

# squawk findings we deliberately do not produce, and why squawk is wrong or stricter there.
SQUAWK_WRONG = {
    ("unique_constraint.sql", "constraint-missing-not-valid"):
        "squawk advises NOT VALID for a UNIQUE constraint; PostgreSQL has no NOT VALID for UNIQUE "
        "(only CHECK and FOREIGN KEY). The right advice is disallowed-unique-constraint's USING INDEX recipe.",
    ("primary_key.sql", "constraint-missing-not-valid"):
        "squawk advises NOT VALID for a PRIMARY KEY; PostgreSQL has no NOT VALID for PRIMARY KEY.",
    ("exclusion_constraint.sql", "constraint-missing-not-valid"):
        "squawk advises NOT VALID for an EXCLUDE constraint, which has none either; we report "
        "adding-exclusion-constraint (no online path: new table, copy, swap).",
    ("objects_created_earlier_in_file.sql", "require-concurrent-index-creation"):
        "squawk exempts a table only inside the transaction that created it; a table created earlier in "
        "the same file is empty and unused, so a plain CREATE INDEX on it is harmless.",
    ("objects_created_earlier_in_file.sql", "adding-not-nullable-field"):
        "same as above: SET NOT NULL on a table the file just created scans nothing.",
    ("references_new_column.sql", "adding-foreign-key-constraint"):
        "ADD COLUMN ... REFERENCES with no default: every value of the new column is NULL, so PostgreSQL skips "
        "the validating scan (2.6 ms against 198 ms for ADD CONSTRAINT FOREIGN KEY on 2M rows, issue #14).",
    ("psql_meta_commands.sql", "syntax-error"):
        "squawk parses psql meta-commands (\\set, \\gexec, \\if) and COPY data rows as SQL; psql never "
        "sends them to the server (docs/lint.md, How a file is read).",
    ("ignored_by_line_comment.sql", "renaming-column"):
        "squawk does not read compose-atomic-ignore comments (we read squawk's).",
}
# squawk ids whose finding we report under another id.
SQUAWK_EQUIVALENT = {
    # squawk reports a foreign key without NOT VALID twice; we report it once, as the foreign-key rule.
    "constraint-missing-not-valid": "adding-foreign-key-constraint",
}


def labels(path: Path) -> tuple[set[str], list[str]]:
    expect: set[str] = set()
    options: list[str] = []
    for line in path.read_text().splitlines()[:3]:
        if line.startswith("-- expect:"):
            expect = set(line.split(":", 1)[1].split())
        elif line.startswith("-- options:"):
            options = shlex.split(line.split(":", 1)[1])
    return expect, options


def config_for(options: list[str]) -> LintConfig:
    config = LintConfig()
    if "--assume-in-transaction" in options:
        config.assume_in_transaction = True
    if "--pg-version" in options:
        config.pg_version = parse_pg_version(options[options.index("--pg-version") + 1])
    return config


def ours(path: Path) -> set[str]:
    _, options = labels(path)
    return {f.rule for f in Linter(get_rules(), config_for(options)).lint_text(str(path), path.read_text())}


def core_rules() -> set[str]:
    return {r.id for r in get_rules().values() if r.squawk} - ADVISORY


@pytest.mark.parametrize("path", FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_corpus_labels(path):
    expect, _ = labels(path)
    found = ours(path)
    assert found - (ADVISORY - expect) == expect
    if path.parent.name == "safe":
        assert not found - INFO, f"a safe case has findings: {found}"


def squawk_binary() -> str:
    found = Path(sys.executable).parent / "squawk"
    if found.exists():
        return str(found)
    which = shutil.which("squawk")
    if not which:
        pytest.fail("squawk-cli is not installed: pip install -e '.[test]'")
    return which


@pytest.fixture(scope="module")
def squawk_results() -> dict[str, set[str]]:
    """squawk's rule names per corpus file, one squawk run per distinct option set."""
    groups: dict[tuple[str, ...], list[Path]] = defaultdict(list)
    for path in FILES:
        groups[tuple(labels(path)[1])].append(path)
    results: dict[str, set[str]] = {str(p): set() for p in FILES}
    for options, paths in groups.items():
        squawk_opts = list(options)
        if "--pg-version" in squawk_opts:
            i = squawk_opts.index("--pg-version") + 1
            squawk_opts[i] = f"{parse_pg_version(squawk_opts[i])[0]}.0"
        proc = subprocess.run([squawk_binary(), "--reporter", "json", *squawk_opts, *map(str, paths)],
                              capture_output=True, text=True, timeout=60, cwd=CORPUS,
                              env={**os.environ, "SQUAWK_DISABLE_GITHUB_ANNOTATIONS": "1"})
        assert proc.returncode in (0, 1), proc.stderr
        for item in json.loads(proc.stdout or "[]"):
            results[str((CORPUS / item["file"]).resolve()) if not os.path.isabs(item["file"])
                    else item["file"]].add(item["rule_name"])
    assert "require-concurrent-index-creation" in results[str(CORPUS / "unsafe" / "index_create.sql")]
    return results


def test_we_report_at_least_squawks_core_findings_on_unsafe_cases(squawk_results):
    core = core_rules()
    missing = {}
    for path in FILES:
        if path.parent.name != "unsafe":
            continue
        theirs = squawk_results[str(path)] & (core | set(SQUAWK_EQUIVALENT))
        mine = ours(path)
        for rule in theirs:
            if rule in mine or (path.name, rule) in SQUAWK_WRONG:
                continue
            if SQUAWK_EQUIVALENT.get(rule) in mine:
                continue
            missing[path.name] = rule
    assert not missing, f"squawk finds, we do not: {missing}"


def test_no_core_findings_on_safe_cases_and_squawk_differences_are_explained(squawk_results):
    core = core_rules()
    unexplained = {}
    for path in FILES:
        if path.parent.name != "safe":
            continue
        assert not ours(path) & core
        for rule in squawk_results[str(path)] & core:
            if (path.name, rule) not in SQUAWK_WRONG:
                unexplained[path.name] = rule
    assert not unexplained, f"squawk flags a safe case for a reason not documented here: {unexplained}"


def test_we_catch_unsafe_cases_squawk_misses(squawk_results):
    """Beyond squawk: statements that cannot run in a transaction, serial columns, table rewrites."""
    core = core_rules() | {"table-rewrite", "adding-exclusion-constraint", "work-after-access-exclusive"}
    beyond = sorted(p.stem for p in FILES if p.parent.name == "unsafe"
                    and ours(p) & core and not squawk_results[str(p)] & (core | set(SQUAWK_EQUIVALENT)))
    for case in ("drop_concurrently_in_transaction", "vacuum_in_runner_transaction",
                 "add_enum_value_in_transaction_pg11", "serial_column", "vacuum_full", "cluster",
                 "set_tablespace", "set_logged", "work_after_access_exclusive",
                 "more_non_transactional_statements"):
        assert case in beyond, beyond
