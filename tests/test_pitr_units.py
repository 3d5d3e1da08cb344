"""PITR's pure parts: the generated override, settings, time parsing, the sidecar's list output."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

import compose_atomic.pitr.plugin  # noqa: F401 - registers the PITR extension of `backup generate`
from compose_atomic.backup.generate import build, rclone_builder, render
from compose_atomic.errors import ConfigError, UsageError
from compose_atomic.pitr.generate import database_command, hba_text, image_major, server_flags
from compose_atomic.pitr.host import parse_list, parse_time, restore_args
from compose_atomic.pitr.settings import parse_span, pitr_settings
from compose_atomic.project import ComposeOptions, Project
from compose_atomic.settings import DEFAULTS


def project_for(tmp_path: Path, db: dict) -> Project:
    compose = {"services": {"db": db}}
    path = tmp_path / "compose.yaml"
    path.write_text(yaml.safe_dump(compose))
    return Project(name="shop", options=ComposeOptions(), config=compose, files=[path], working_dir=tmp_path)


DB = {
    "image": "postgres:17-alpine",
    "environment": {"POSTGRES_DB": "app", "POSTGRES_PASSWORD_FILE": "/run/secrets/db_password"},
    "secrets": [{"source": "db_password"}],
    "x-atomic": {"backup": {"schedule": "@daily", "pitr": {"keep": "3d", "max_wal_keep": "2GB"},
                            "offsite": {"rclone": "b2:bucket/db"}}},
}


def test_image_major_reads_the_tag():
    assert image_major("postgres:17-alpine") == 17
    assert image_major("postgres:15.4") == 15
    assert image_major("registry.example:5000/team/postgres:16") == 16
    assert image_major("compose-atomic-testbed/postgres:17") == 17
    assert image_major("postgres") is None and image_major("postgres:latest") is None


def test_database_command_keeps_the_users_flags_first():
    flags = ["-c", "hba_file=/x"]
    assert database_command({}, flags) == ["postgres", "-c", "hba_file=/x"]
    assert database_command({"command": "postgres -c shared_buffers=1GB"}, flags) == \
        ["postgres", "-c", "shared_buffers=1GB", "-c", "hba_file=/x"]
    assert database_command({"command": ["-c", "a=b"]}, flags) == ["postgres", "-c", "a=b", "-c", "hba_file=/x"]
    with pytest.raises(ConfigError, match="must run postgres"):
        database_command({"command": ["sh", "-c", "exec postgres"]}, flags)


def test_generated_override_for_pitr(tmp_path):
    project = project_for(tmp_path, DB)
    doc = build(project, {"rclone": rclone_builder})
    assert doc["services"]["db"]["command"] == ["postgres", "-c", "hba_file=/etc/compose-atomic/pg_hba.conf",
                                                "-c", "max_slot_wal_keep_size=2GB", "-c", "summarize_wal=on"]
    pitr = doc["services"]["db-pitr"]
    assert pitr["environment"]["PITR_KEEP"] == str(3 * 86400)
    assert pitr["environment"]["PITR_SCHEDULE"] == "0 0 * * *"
    assert pitr["volumes"] == ["db-pitr:/pitr"]
    assert doc["services"]["db-pitr-offsite"]["environment"]["PITR_OFFSITE_REMOTE"] == "b2:bucket/db/pitr"
    assert "host    replication  postgres   all           scram-sha-256" in \
        doc["configs"]["compose_atomic_pitr_hba_db"]["content"]
    first = render(project, doc, "compose.backup.yml")
    assert first == render(project, build(project, {"rclone": rclone_builder}), "compose.backup.yml")  # deterministic


def test_no_summarize_wal_below_17_or_when_incremental_is_off(tmp_path):
    s = pitr_settings(project_for(tmp_path, DB), "db")
    assert "summarize_wal=on" not in server_flags(s, 15)
    assert "summarize_wal=on" not in server_flags(s, None)
    off = {**DB, "x-atomic": {"backup": {"pitr": {"incremental": False}}}}
    assert "summarize_wal=on" not in server_flags(pitr_settings(project_for(tmp_path, off), "db"), 17)


def test_settings_defaults_and_errors(tmp_path):
    plain = {**DB, "x-atomic": {"backup": {"pitr": {}}}}
    s = pitr_settings(project_for(tmp_path, plain), "db")
    assert s.keep == parse_span(DEFAULTS["backup.pitr.keep"], "keep") == 7 * 86400
    assert s.max_wal_keep == "4GB" and s.max_lag == 120 and s.full_every == 7 and s.incremental
    assert parse_span("1d12h", "keep") == 36 * 3600
    with pytest.raises(ConfigError, match="not a duration"):
        parse_span("7 days", "keep")
    bad = {**DB, "x-atomic": {"backup": {"pitr": {"max_wal_keep": "4G"}}}}
    with pytest.raises(ConfigError, match="not a size"):
        pitr_settings(project_for(tmp_path, bad), "db")


def test_hba_keeps_the_image_lines_and_adds_one_replication_line():
    text = hba_text("app_owner", "md5")
    assert "host    all          all   all           md5" in text
    assert text.count("replication  app_owner") == 1


def test_restore_time_needs_a_zone_and_becomes_utc():
    when = parse_time("2026-12-01T15:03:00.25+01:00")
    assert when == dt.datetime(2026, 12, 1, 14, 3, 0, 250000, tzinfo=dt.timezone.utc)
    assert restore_args(when) == ["time", str(int(when.timestamp())), "2026-12-01 14:03:00.250000+00"]
    assert restore_args(None) == ["latest"]
    assert parse_time("2026-12-01 14:03:00Z").hour == 14
    with pytest.raises(UsageError, match="time zone"):
        parse_time("2026-12-01 14:03:00")
    with pytest.raises(UsageError, match="not a time"):
        parse_time("yesterday")


def test_list_output_parses():
    out = ("BASE\t20261201T030000Z\tfull\t\t100\t160\t45692\n"
           "BASE\t20261202T030000Z\tincremental\t20261201T030000Z\t200\t210\t2000\n"
           "WINDOW\t160\t300\t7\n"
           "STATUS\treceive\t300\tok\treceived up to 0/3\t300 0\n")
    data = parse_list(out)
    assert [b["kind"] for b in data["bases"]] == ["full", "incremental"]
    assert data["bases"][1]["parent"] == "20261201T030000Z"
    assert data["window"] == {"from": 160, "to": 300, "wal_segments": 7}
    assert data["status"]["receive"]["result"] == "ok"
