"""The production install from a fresh clone, then the same command again: both times side by side.

    .venv/bin/python bench/install.py [--warm-pip-cache]

A clone of this checkout's last commit is installed under a prefix of its own, as the production
test does it (scripts/install.sh --prefix, its own user, database and ports: everything a real
install does but for systemd and the system's nginx). The clone has no node_modules (npm installs
them) and pip starts with an empty cache (--warm-pip-cache: the machine's), so the Python and
front-end packages are downloaded; Debian's packages are whatever the machine has, and the first
run says which it had to install. Everything is removed afterwards.
"""

import argparse
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.staged import StagedInstall, remove_install  # noqa: E402


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm-pip-cache", action="store_true", help="use the machine's pip cache")
    args = parser.parse_args()
    remove_install(None)
    with tempfile.TemporaryDirectory(prefix="bench-install-") as work:
        work = Path(work)
        work.chmod(0o755)
        clone = work / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        environment = {} if args.warm_pip_cache else {"PIP_CACHE_DIR": str(work / "pip-cache")}
        ports = {name: free_port() for name in ("https", "http", "web", "console", "redis")}
        script = clone / "scripts/install.sh"
        install = StagedInstall(work / "root", ports, script=script, environment=environment)
        install.prefix.mkdir(mode=0o755)
        try:
            fresh, second = install.install(), install.install()
        finally:
            install.remove()
    said = [line for line in fresh.output.splitlines() if "Installing" in line or "installed:" in line]
    print("\n".join(said))
    print(f"\n{'':24}{'fresh clone':>14}{'second run':>14}")
    print(f"{'scripts/install.sh':24}{fresh.seconds:>12.1f} s{second.seconds:>12.1f} s")
    print("pip cache:", "the machine's" if args.warm_pip_cache else "empty at the start")
    assert "nothing changed" in second.output, second.output


if __name__ == "__main__":
    main()
