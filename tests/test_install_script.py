"""scripts/install.sh refuses bad options with a clear message before it changes anything.

(The install itself, run for real under a prefix, is tests/integration/test_production.py.)
"""

import subprocess
from pathlib import Path

import pytest

INSTALL = Path(__file__).resolve().parents[1] / "scripts" / "install.sh"


def install(prefix: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(INSTALL), f"--prefix={prefix}", *options], capture_output=True, text=True, timeout=60
    )


DOMAIN = ["--domain", "panel.example.com"]


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ([], "--domain is required the first time"),
        (["--domain", "Panel Example"], "is not a domain name"),
        (["--domain", "panel.example.com;reboot"], "is not a domain name"),
        ([*DOMAIN, "--user", "Robert'); DROP"], "must be lower-case letters"),
        ([*DOMAIN, "--https-port", "0"], "is not a port number"),
        ([*DOMAIN, "--redis-port", "65536"], "is not a port number"),
        ([*DOMAIN, "--listen", "any"], "is not an address"),
        ([*DOMAIN, "--cert", "/etc/hostname"], "--cert and --key go together"),
        ([*DOMAIN, "--cert", "/nonexistent", "--key", "/nonexistent"], "no such file"),
        ([*DOMAIN, "--cert", "/etc/hostname", "--key", "/etc/hostname"], "not a PEM"),
        ([*DOMAIN, "--cert", "/x;y", "--key", "/k"], "must be an absolute path of"),
        ([*DOMAIN, "--cert", "cert.pem", "--key", "/k"], "must be an absolute path of"),
        (["--frobnicate"], "unknown option '--frobnicate'"),
    ],
)
def test_bad_options_are_refused_and_nothing_is_made(tmp_path, options, said):
    result = install(tmp_path, *options)
    assert result.returncode == 2
    assert said in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_relative_prefix_is_refused(tmp_path):
    result = subprocess.run(
        ["bash", str(INSTALL), "--prefix=relative/dir", "--domain=panel.example.com"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2 and "--prefix must be an absolute path" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_help_says_how_to_install():
    result = subprocess.run(["bash", str(INSTALL), "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "scripts/install.sh --domain panel.example.com" in result.stdout
