"""The one door to PowerDNS Authoritative: its HTTP API (zones and PTR records), and the files a
pdns_server of the panel's own runs from (`manage.py rdns_server`, the tests' servers).

Every failure becomes PowerDNSError; `transient` ones (the server is away, answers 5xx) are retried
by the caller, the others (a refused zone or name) are not.
"""

import json
import shutil
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

# Debian's pdns-backend-sqlite3 ships the schema here.
SCHEMA_PATHS = (
    Path("/usr/share/doc/pdns-backend-sqlite3/schema.sqlite3.sql"),
    Path("/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql"),
)
PTR_TTL = 3600


class PowerDNSError(Exception):
    """PowerDNS did not do what was asked; `transient` errors may succeed later."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


class PowerDNS:
    """A PowerDNS server's API (`url` like http://127.0.0.1:8081, the server id "localhost")."""

    def __init__(self, url: str, api_key: str, timeout: float = 5.0):
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"KVMPANEL_PDNS_URL must be an http(s) URL, not {url!r}")
        self.base = url.rstrip("/") + "/api/v1/servers/localhost"
        self.api_key = api_key
        self.timeout = timeout

    def _call(self, method: str, path: str, body: dict | None = None) -> dict | None:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 - http(s) only, checked in __init__
            self.base + path,
            data=data,
            method=method,
            headers={
                "X-API-Key": self.api_key,
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 - our URL
                payload = response.read()
        except urllib.error.HTTPError as error:
            message = _error_message(error)
            raise PowerDNSError(
                f"PowerDNS answered {error.code}: {message}", transient=error.code >= 500
            ) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise PowerDNSError(f"PowerDNS is not answering: {reason}", transient=True) from None
        return json.loads(payload) if payload else None

    def zone(self, zone: str) -> dict | None:
        """The zone with its records, or None when the server has no such zone."""
        try:
            return self._call("GET", f"/zones/{urllib.parse.quote(zone)}")
        except PowerDNSError as error:
            if "answered 404" in str(error) or "answered 422" in str(error):
                return None
            raise

    def ensure_zone(self, zone: str, nameservers: list[str]) -> bool:
        """Make `zone` (a native zone with its SOA and NS records) unless it exists. True if made."""
        if self.zone(zone) is not None:
            return False
        try:
            self._call("POST", "/zones", {"name": zone, "kind": "Native", "nameservers": nameservers})
        except PowerDNSError as error:
            if "already exists" in str(error) or "Conflict" in str(error):
                return False  # made meanwhile by another worker
            raise
        return True

    def set_ptr(self, zone: str, name: str, target: str) -> None:
        """Point `name` (in `zone`) at `target`; an empty target removes the record."""
        rrset = {"name": name, "type": "PTR", "changetype": "DELETE"}
        if target:
            rrset = {
                **rrset,
                "changetype": "REPLACE",
                "ttl": PTR_TTL,
                "records": [{"content": target, "disabled": False}],
            }
        self._call("PATCH", f"/zones/{urllib.parse.quote(zone)}", {"rrsets": [rrset]})

    def ptr(self, zone: str, name: str) -> str:
        """What `name` points at in `zone` ("" when nothing)."""
        found = self.zone(zone) or {}
        for rrset in found.get("rrsets", []):
            if rrset["name"] == name and rrset["type"] == "PTR" and rrset["records"]:
                return rrset["records"][0]["content"]
        return ""


def _error_message(error: urllib.error.HTTPError) -> str:
    try:
        return json.loads(error.read()).get("error", error.reason)
    except (ValueError, OSError):
        return str(error.reason)


# --- a server of the panel's own -------------------------------------------------------------


def schema_path() -> Path:
    for path in SCHEMA_PATHS:
        if path.exists():
            return path
    raise FileNotFoundError("the pdns-backend-sqlite3 schema is missing: install pdns-backend-sqlite3")


def write_server_files(
    directory: Path, *, dns_port: int, api_port: int, api_key: str, address="127.0.0.1"
) -> Path:
    """A pdns.conf and its SQLite database in `directory` (the database is kept if it exists).

    DNS and the API listen on `address` only; the API needs `api_key`. Returns the config directory.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    database = directory / "pdns.sqlite3"
    if not database.exists():
        with sqlite3.connect(database) as connection:
            connection.executescript(schema_path().read_text())
    config = directory / "pdns.conf"
    config.write_text(
        "\n".join(
            [
                "launch=gsqlite3",
                f"gsqlite3-database={database}",
                f"local-address={address}",
                f"local-port={dns_port}",
                "api=yes",
                f"api-key={api_key}",
                "webserver=yes",
                f"webserver-address={address}",
                f"webserver-port={api_port}",
                f"webserver-allow-from={address}",
                f"socket-dir={directory}",
                "guardian=no",
                "daemon=no",
                "disable-syslog=yes",
                "loglevel=4",
                "security-poll-suffix=",  # no status queries to the outside world
                "",
            ]
        )
    )
    config.chmod(0o600)  # it holds the API key
    return directory


def server_command(directory: Path) -> list[str]:
    """The command that runs the server of `directory` in the foreground."""
    binary = shutil.which("pdns_server") or "/usr/sbin/pdns_server"
    return [binary, f"--config-dir={directory}"]
