"""scripts/testbed.sh reads the Debian mirror only from the machine's apt sources."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import ROOT

MIRROR = "http://mirror.invalid/debian"


def mirror(apt: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "scripts" / "testbed.sh"), "mirror"], capture_output=True, text=True,
                          timeout=30, env={"PATH": "/usr/bin:/bin", "COMPOSE_ATOMIC_TESTBED_APT_ETC": str(apt)})


def test_the_mirror_comes_from_deb822_sources_for_bookworm(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://other.invalid/debian-security\nSuites: bookworm-security\nComponents: main\n\n"
        "Types: deb\nURIs: http://disabled.invalid/debian\nSuites: bookworm\nComponents: main\nEnabled: no\n\n"
        f"Types: deb deb-src\nURIs: {MIRROR}\nSuites: bookworm bookworm-updates\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n")
    proc = mirror(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == MIRROR


def test_the_mirror_comes_from_a_sources_list_deb_line(tmp_path):
    (tmp_path / "sources.list").write_text(
        "# deb http://commented.invalid/debian bookworm main\n"
        "deb-src http://src.invalid/debian bookworm main\n"
        f"deb [arch=amd64 signed-by=/k.gpg] {MIRROR} bookworm main contrib\n")
    proc = mirror(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == MIRROR


def test_no_mirror_is_a_clear_error_and_no_host_is_built_in(tmp_path):
    (tmp_path / "sources.list").write_text("deb http://old.invalid/debian bullseye main\n")
    proc = mirror(tmp_path)
    assert proc.returncode == 1
    assert "no Debian bookworm mirror found" in proc.stderr and proc.stdout == ""
    script = (ROOT / "scripts" / "testbed.sh").read_text()
    assert "http://" not in script and "https://" not in script  # no fallback host
