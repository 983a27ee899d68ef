"""The production install (scripts/install.sh), staged under a prefix of its own, and the panel it makes.

One install per session: the first run is a fresh install (its time is printed), the second changes
nothing. Its units are checked by systemd-analyze; its database is taken back to the previous
release and upgraded by a third run; its dumps are restored. Then its processes are started from
the units it wrote, with its settings, behind its nginx configuration on 127.0.0.1 with its
self-signed certificate, and Chromium goes through them over https:// and wss://: the first admin
signs in (setting up two-factor) and uploads an image; a customer creates a VM and watches it
come up live, sees its screen and logs in on its serial console.
"""

import base64
import contextlib
import hashlib
import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from django_otp.oath import TOTP

from .conftest import CHROMIUM_ARGS, IMAGE_VOLUME, OUTPUT, free_port, serial_text, settled, virsh
from .staged import (
    DOMAIN,
    USER,
    StagedInstall,
    read_environment_file,
    remove_install,
    staged_nginx,
    started_unit,
    user_reaches_libvirt,
    world,
)
from .test_vm_lifecycle import (
    back_to_the_vm_page,
    canvas_colours,
    log_in_on_serial,
    open_console_page,
    serial_command,
    wait_for_settled_state,
)

pytestmark = pytest.mark.integration

NODE = "test-p18-node"
BOOT_TIMEOUT = 300
VM_PASSWORD = "staged-Boot-pw-18"
# The security headers the panel sets; whichever it sends directly must arrive through nginx unchanged.
SECURITY_HEADERS = (
    "strict-transport-security",
    "content-security-policy",
    "content-security-policy-report-only",
    "x-frame-options",
    "x-content-type-options",
    "referrer-policy",
    "cross-origin-opener-policy",
    "permissions-policy",
)


@pytest.fixture(scope="session")
def staged():
    """A fresh install, then the same command again (and what that changed on disk)."""
    remove_install(None)  # what an interrupted earlier run may have left (users, database)
    prefix = Path(tempfile.mkdtemp(prefix="test-p18-install-"))
    prefix.chmod(0o755)  # nginx's workers (www-data) read the static files inside
    ports = {name: free_port() for name in ("https", "http", "web", "console", "redis")}
    install = StagedInstall(prefix, ports)
    try:
        install.install()
        before = install.snapshot()
        install.install()
        install.changed_by_second_run = sorted(set(before) ^ set(install.snapshot()))
        yield install
    finally:
        install.remove()


def test_the_install_runs_fresh_then_changes_nothing_the_second_time(staged):
    fresh, second = staged.runs[:2]
    print(f"\ninstall: fresh {fresh.seconds:.1f} s, second run {second.seconds:.1f} s")
    assert "kvmpanel installed:" in fresh.output
    assert re.search(r"Sign in as 'admin' with password:\s+(\S+)", fresh.output)
    assert "nothing changed" in second.output and "Admin created" not in second.output
    assert staged.changed_by_second_run == []  # no file written, touched, moved or chmod-ed
    # What systemd and nginx would have done is said, not hidden.
    assert "Skipped: staged install" in fresh.output


def test_every_unit_passes_systemd_analyze_verify(staged):
    units = staged.units()
    names = {unit.name for unit in units}
    for process in ("web", "worker", "beat", "console", "monitor", "redis", "dns"):
        assert f"kvmpanel-{process}.service" in names
        assert f"kvmpanel-{process}.service" in staged.unit("kvmpanel.target").words("Wants")
    assert {"kvmpanel.target", "kvmpanel-backup.service", "kvmpanel-backup.timer"} <= names
    result = subprocess.run(["systemd-analyze", "verify", *map(str, units)], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout + result.stderr == "", result.stdout + result.stderr


def test_every_service_is_hardened_and_restarts_on_failure(staged):
    """Own user, no new privileges, read-only system with only its own folders writable, private /tmp;
    systemd's own exposure score for each (lower is better; 10 is an unsandboxed root service)."""
    scores = {}
    for path in staged.unit_dir.glob("kvmpanel-*.service"):
        unit = staged.unit(path.name)
        assert unit.get("User") not in ("", "root"), path.name
        assert unit.get("NoNewPrivileges") == "yes" and unit.get("ProtectSystem") == "strict", path.name
        assert unit.get("PrivateTmp") == "yes" and unit.get("ProtectHome") == "yes", path.name
        assert unit.get("CapabilityBoundingSet") == "", path.name
        for writable in unit.get("ReadWritePaths").split():
            assert writable.startswith(str(staged.prefix / "var")), (path.name, writable)
        if unit.get("Type") != "oneshot":
            assert unit.get("Restart") == "on-failure" and "kvmpanel.target" in unit.words("PartOf"), (
                path.name
            )
        result = subprocess.run(
            ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(path)],
            capture_output=True,
            text=True,
        )
        scores[path.name] = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout).group(1)
    print(
        "\nsystemd-analyze security (exposure, 0-10):",
        ", ".join(f"{k} {v}" for k, v in sorted(scores.items())),
    )
    assert all(float(score) < 5 for score in scores.values()), scores


def test_the_settings_are_production_ones_kept_outside_the_code(staged):
    settings = staged.settings()
    assert staged.env_file.stat().st_mode & 0o777 == 0o640  # root and the panel's group only
    assert (settings["DEBUG"], settings["HTTPS"]) == ("0", "1")
    assert settings["ALLOWED_HOSTS"] == DOMAIN
    assert settings["CSRF_TRUSTED_ORIGINS"] == staged.url
    assert settings["KVMPANEL_CONSOLE_URL"] == f"wss://{DOMAIN}:{staged.ports['https']}/console-ws/"
    assert len(settings["SECRET_KEY"]) >= 50 and settings["SECRET_KEY"] not in (Path(__file__).read_text())
    assert settings["DATABASE_URL"].startswith(f"postgres://{USER}:")
    assert (
        settings["REDIS_URL"].startswith("redis://:")
        and f":{staged.ports['redis']}/" in settings["REDIS_URL"]
    )
    redis_conf = (staged.prefix / "etc/kvmpanel/redis.conf").read_text()
    assert "appendonly yes" in redis_conf and "bind 127.0.0.1 -::1" in redis_conf
    assert "#EMAIL_HOST=" in staged.env_file.read_text()  # e-mail settings to fill in


def test_the_operators_own_settings_are_kept(staged):
    add_test_settings(staged)
    staged.env_file.write_text(
        staged.env_file.read_text().replace("KVMPANEL_WORKERS=4", "KVMPANEL_WORKERS=2")
    )
    staged.env_file.write_text(staged.env_file.read_text().replace("HTTPS=1", "HTTPS=0"))  # but not this one
    assert "nothing changed" not in staged.install().output
    settings = staged.settings()
    assert (settings["KVMPANEL_WORKERS"], settings["KVMPANEL_DOMAIN_PREFIX"], settings["HTTPS"]) == (
        "2",
        "test-",
        "1",
    )
    assert "nothing changed" in staged.install().output


def add_test_settings(staged):
    """The operator's line the tests need: what the staged panel makes in libvirt is named test-…"""
    if "KVMPANEL_DOMAIN_PREFIX" not in staged.settings():
        staged.add_setting("KVMPANEL_DOMAIN_PREFIX", "test-")


def test_check_deploy_is_clean_with_the_generated_settings(staged):
    result = staged.manage("check", "--deploy", "--fail-level", "DEBUG")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_an_upgrade_from_the_previous_release_keeps_every_row(staged):
    before = json.loads(world(staged, "previous-release"))
    assert before and all(before.values())

    run = staged.install()
    print(f"\nupgrade from the previous release's migrations: {run.seconds:.1f} s")
    assert "dumped the database before the upgrade" in run.output
    assert "applied the new migrations" in run.output
    assert json.loads(world(staged, "counts", *before)) == before
    dumps = list((staged.prefix / "var/backups/kvmpanel").glob("pre-upgrade-*.dump"))
    assert len(dumps) == 1 and dumps[0].stat().st_size > 0
    assert "nothing changed" in staged.install().output  # and again: nothing new


def test_nightly_dumps_keep_the_newest_and_restore_as_the_readme_says(staged):
    backups = staged.prefix / "var/backups/kvmpanel"
    settings = staged.settings()
    for _ in range(3):  # the timer's service, as systemd would run it (its user, its settings)
        run_backup_service(staged, {"KVMPANEL_BACKUP_KEEP": "2"})
        time.sleep(1.1)  # dumps are named to the second
    dumps = sorted(backups.glob("kvmpanel-*.dump"))
    assert len(dumps) == 2 and all(dump.owner() == USER for dump in dumps)
    assert not list(backups.glob(".*partial"))

    # A mishap after the dump: the migration history is gone.
    applied = json.loads(world(staged, "row-count", "django_migrations"))
    subprocess.run(["psql", settings["DATABASE_URL"], "-qc", "DELETE FROM django_migrations"], check=True)
    assert json.loads(world(staged, "row-count", "django_migrations")) == 0
    # README, "Restore": with the panel stopped, as the panel's user.
    restore = subprocess.run(
        ["runuser", "-u", USER, "--", "pg_restore", "--clean", "--if-exists", "--no-owner",
         "--single-transaction", "--dbname", settings["DATABASE_URL"], str(dumps[-1])],
        capture_output=True, text=True, cwd="/",
    )  # fmt: skip
    assert restore.returncode == 0, restore.stderr
    assert json.loads(world(staged, "row-count", "django_migrations")) == applied
    assert staged.manage("migrate", "--check").returncode == 0


def run_backup_service(staged, extra: dict[str, str]):
    unit = staged.unit("kvmpanel-backup.service")
    environment = {**read_environment_file(staged.env_file), **extra, "PATH": os.environ["PATH"]}
    result = subprocess.run(
        ["runuser", "-u", unit.get("User"), "--", "env", *[f"{k}={v}" for k, v in environment.items()],
         *unit.command(environment)],
        cwd=unit.get("WorkingDirectory"), capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_bad_input_stops_before_anything_changes(staged, tmp_path):
    other_key = tmp_path / "other.key"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-out", str(other_key)], check=True, capture_output=True)  # fmt: skip
    certificate, key = (
        staged.prefix / "etc/kvmpanel/tls" / name for name in ("selfsigned.crt", "selfsigned.key")
    )
    before = staged.snapshot()
    for options, said in [
        (["--domain", "not a domain"], "is not a domain name"),
        (["--cert", str(certificate)], "--cert and --key go together"),
        (["--cert", str(certificate), "--key", str(other_key)], "is not the key of"),
        (["--domain", "other.example", "--cert", str(certificate), "--key", str(key)], "not valid for"),
        (["--https-port", "99999"], "is not a port number"),
    ]:
        run = staged.install(*staged.options(), *options, check=False)
        assert said in run.output, (options, run.output)
    assert staged.snapshot() == before


def _operator_certificate(folder: Path) -> tuple[Path, Path, Path]:
    """A certificate for the domain from a CA of the test's own, as an operator's CA would sign it."""
    ca_key, ca_cert, key, request, cert = (
        folder / name for name in ("ca.key", "ca.crt", "panel.key", "panel.csr", "panel.crt")
    )
    extensions = folder / "san.cnf"
    extensions.write_text(f"subjectAltName=DNS:{DOMAIN}\n")
    for command in (
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "2", "-subj", "/CN=test operator CA", "-keyout", ca_key, "-out", ca_cert],
        ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-subj", f"/CN={DOMAIN}", "-keyout", key, "-out", request],
        ["openssl", "x509", "-req", "-in", request, "-CA", ca_cert, "-CAkey", ca_key, "-CAcreateserial",
         "-days", "2", "-extfile", extensions, "-out", cert],
    ):  # fmt: skip
        subprocess.run(list(map(str, command)), check=True, capture_output=True)
    return cert, key, ca_cert


def test_the_operators_certificate_is_served_and_the_self_signed_one_comes_back(staged, tmp_path):
    """--cert/--key: nginx serves exactly the operator's certificate; --self-signed goes back to the
    install's own (the same one: it was kept)."""
    cert, key, ca_cert = _operator_certificate(tmp_path)
    self_signed = (staged.prefix / "etc/kvmpanel/tls/selfsigned.crt").read_bytes()
    staged.install(*staged.options(), "--cert", str(cert), "--key", str(key))
    try:
        with staged_nginx(staged, OUTPUT):
            trusted = ssl.create_default_context(cafile=str(ca_cert))  # only the operator's CA
            with (
                socket.create_connection(("127.0.0.1", staged.ports["https"]), timeout=10) as raw,
                trusted.wrap_socket(raw, server_hostname=DOMAIN) as tls,
            ):
                served = tls.getpeercert(binary_form=True)
        given = x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(Encoding.DER)
        assert served == given
    finally:
        staged.install(*staged.options(), "--self-signed")
    assert (staged.prefix / "etc/kvmpanel/tls/selfsigned.crt").read_bytes() == self_signed
    site = (staged.prefix / "etc/nginx/sites-available/kvmpanel.conf").read_text()
    assert "selfsigned.crt" in site and str(cert) not in site


# --- the panel's processes, as the units start them, behind the site's nginx ---------------------


@pytest.fixture(scope="session")
def staged_redis(staged):
    with started_unit(staged, "kvmpanel-redis.service", OUTPUT, "Ready to accept connections"):
        yield


@pytest.fixture(scope="session")
def staged_cast(staged, staged_redis, libvirt_env):
    """A customer, the test's pool and network as a node, the guest image in it, a plan."""
    add_test_settings(staged)
    return json.loads(world(staged, "cast", NODE, libvirt_env["pool"], libvirt_env["network"], IMAGE_VOLUME))


@pytest.fixture(scope="session")
def staged_panel(staged, staged_cast):
    """Every process from its unit, and nginx with the site; the URL the browser opens."""
    reaches, why = user_reaches_libvirt(USER)
    # Where libvirtd cannot ask polkit (no system bus), only root reaches qemu:///system: the units
    # that speak to libvirt run as root then, and say so in their logs; the others run as their user.
    as_root = "" if reaches else f"{USER} cannot reach qemu:///system here ({why})"
    if as_root:
        print(f"\n{as_root}: web, worker, console and monitor run as root in this test")
    ready = {
        "kvmpanel-web.service": "Listening on",
        "kvmpanel-worker.service": "ready.",
        "kvmpanel-beat.service": "beat: Starting",
        "kvmpanel-console.service": "console bridge on",
        "kvmpanel-monitor.service": "node monitor running",
    }
    with contextlib.ExitStack() as stack:
        for name, line in ready.items():
            needs_libvirt = "libvirtd.service" in staged.unit(name).words("After")
            stack.enter_context(started_unit(staged, name, OUTPUT, line, as_root if needs_libvirt else ""))
        stack.enter_context(staged_nginx(staged, OUTPUT))
        yield staged.url


def https_request(staged, method: str, path: str, headers=None, body=None, port=None, tls=True):
    """One request to the staged panel, the certificate checked against the one the install made."""
    port = port or staged.ports["https"]
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    if tls:
        context = ssl.create_default_context(cafile=str(staged.prefix / "etc/kvmpanel/tls/selfsigned.crt"))
        sock = context.wrap_socket(sock, server_hostname=DOMAIN)
        connection = http.client.HTTPSConnection(DOMAIN, port, timeout=30)
    else:
        connection = http.client.HTTPConnection(DOMAIN, port, timeout=30)
    connection.sock = sock
    connection.request(method, path, body=body, headers={"Host": f"{DOMAIN}:{port}", **(headers or {})})
    response = connection.getresponse()
    response.body = response.read()
    connection.close()
    return response


def security_headers(response) -> dict[str, str]:
    return {name.lower(): value for name, value in response.getheaders() if name.lower() in SECURITY_HEADERS}


def test_security_headers_and_cookies_arrive_through_the_proxy(staged, staged_panel):
    proxied = https_request(staged, "GET", "/accounts/login/")
    assert proxied.status == 200
    # The same page straight from daphne, as nginx asks for it.
    direct = https_request(
        staged, "GET", "/accounts/login/", {"X-Forwarded-Proto": "https"}, port=staged.ports["web"], tls=False
    )
    assert direct.status == 200
    assert security_headers(proxied) == security_headers(direct)  # nginx drops or changes none of them
    policy = security_headers(proxied)["content-security-policy"]  # issue 14's CSP, through the proxy
    assert (
        "script-src 'self'" in policy and "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]
    )
    hsts = security_headers(proxied)["strict-transport-security"]
    assert int(re.search(r"max-age=(\d+)", hsts).group(1)) >= 365 * 24 * 3600
    assert security_headers(proxied)["x-frame-options"] == "DENY"
    cookies = [value for name, value in proxied.getheaders() if name.lower() == "set-cookie"]
    assert cookies and all("; Secure" in cookie for cookie in cookies), cookies


def test_a_client_cannot_choose_its_address_behind_the_proxy(staged, staged_panel):
    """Sign-in throttling and the audit log see the address nginx saw, not one the client claims."""
    page = https_request(staged, "GET", "/accounts/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.body.decode()).group(1)
    cookie = next(v.split(";")[0] for k, v in page.getheaders() if v.startswith("csrftoken="))
    response = https_request(
        staged,
        "POST",
        "/accounts/login/",
        {
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": cookie,
            "Referer": f"{staged.url}/accounts/login/",
            "X-Forwarded-For": "203.0.113.9",
        },
        body=urlencode({"csrfmiddlewaretoken": token, "username": "carol", "password": "not-her-password"}),
    )
    assert response.status == 200 and b"Please enter a correct" in response.body
    assert json.loads(world(staged, "last-sign-in-failure")) == "127.0.0.1"


def test_plain_http_redirects_to_https_and_serves_certificate_challenges(staged, staged_panel):
    http_port = staged.ports["http"]
    response = https_request(staged, "GET", "/vms/?page=2", port=http_port, tls=False)
    assert response.status == 301
    assert response.getheader("Location") == f"{staged.url}/vms/?page=2"
    challenge = staged.prefix / "var/lib/kvmpanel/acme/.well-known/acme-challenge/test-token"
    challenge.parent.mkdir(parents=True, exist_ok=True)
    challenge.write_text("token.thumbprint")
    response = https_request(
        staged, "GET", "/.well-known/acme-challenge/test-token", port=http_port, tls=False
    )
    assert (response.status, response.body) == (200, b"token.thumbprint")


def test_nginx_serves_the_static_files_itself(staged, staged_panel):
    manifest = json.loads((staged.prefix / "opt/kvmpanel/static/staticfiles.json").read_text())
    hashed = manifest["paths"]["vendor/bootstrap/css/bootstrap.min.css"]
    response = https_request(staged, "GET", f"/static/{hashed}", {"Accept-Encoding": "gzip"})
    assert response.status == 200
    assert response.getheader("Content-Encoding") == "gzip"  # the .gz collectstatic made, as it is
    assert response.getheader("ETag") and "immutable" in response.getheader("Cache-Control")


# --- in Chromium, over https:// and wss:// -------------------------------------------------------


@pytest.fixture(scope="session")
def staged_browser(playwright_session, staged):
    """Chromium that resolves the panel's name to 127.0.0.1 and trusts the install's certificate
    (and nothing else)."""
    pem = (staged.prefix / "etc/kvmpanel/tls/selfsigned.crt").read_bytes()
    certificate = x509.load_pem_x509_certificate(pem)
    public_key = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    spki = base64.b64encode(hashlib.sha256(public_key).digest()).decode()
    args = [arg for arg in CHROMIUM_ARGS if not arg.startswith("--host-resolver-rules")]
    args += [
        f"--host-resolver-rules=MAP {DOMAIN} 127.0.0.1 , MAP * ~NOTFOUND , EXCLUDE localhost , "
        "EXCLUDE 127.0.0.1",
        f"--ignore-certificate-errors-spki-list={spki}",
    ]
    browser = playwright_session.chromium.launch(
        executable_path="/usr/bin/chromium", headless=True, args=args
    )
    yield browser
    browser.close()


@pytest.fixture
def staged_page(staged_browser):
    context = staged_browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    yield page
    context.close()


def totp_code(secret: str) -> str:
    """What an authenticator app shows for the key typed in from the setup page."""
    secret = secret.replace(" ", "")
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    totp = TOTP(key, step=30, t0=0, digits=6, drift=0)
    totp.time = time.time()
    return f"{totp.token():06d}"


def admin_password(staged) -> str:
    return re.search(r"Sign in as 'admin' with password:\s+(\S+)", staged.runs[0].output).group(1)


@pytest.mark.browser
def test_the_first_admin_signs_in_sets_up_two_factor_and_uploads_an_image(
    staged, staged_panel, staged_page, libvirt_env, wait_until, tmp_path
):
    page = staged_page
    page.goto(f"{staged_panel}/accounts/login/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", admin_password(staged))
    page.click("main button[type=submit]")
    page.wait_for_selector("#totp-secret")  # staff set up two-factor before anything else
    page.screenshot(path=str(OUTPUT / "staged-admin-two-factor.png"), full_page=True)
    page.fill("#id_code", totp_code(page.inner_text("#totp-secret")))
    page.get_by_role("button", name="Turn on two-factor").click()
    page.wait_for_selector("#recovery-codes")
    assert page.url.startswith(f"{staged_panel}/")  # still https, still the panel's name

    cookies = {cookie["name"]: cookie for cookie in page.context.cookies()}
    session = cookies["sessionid"]
    assert session["secure"] and session["httpOnly"] and session["sameSite"] == "Lax"
    assert cookies["csrftoken"]["secure"]

    disk = tmp_path / "staged-upload.img"
    first = bytearray(os.urandom(1024 * 1024))
    first[510:512] = b"\x55\xaa"  # a partition table's signature: a raw disk image
    disk.write_bytes(bytes(first) + os.urandom(15 * 1024 * 1024))  # 16 MiB: above nginx's default 1 MiB
    page.goto(f"{staged_panel}/backoffice/images/image/add/")
    page.fill("#id_name", "Uploaded through nginx")
    page.select_option("#id_os_family", "linux")
    page.fill("#id_default_user", "root")
    page.fill("#id_checksum_sha256", hashlib.sha256(disk.read_bytes()).hexdigest())
    page.set_input_files("#id_upload", str(disk))
    page.click("input[name=_save]")
    page.wait_for_url("**/backoffice/images/image/", timeout=120_000)

    def placed() -> bool:
        page.reload()
        return "Ready" in page.locator("tr", has_text="Uploaded through nginx").inner_text()

    wait_until(placed, 120, "the uploaded image placed in the node's pool by the worker")
    page.screenshot(path=str(OUTPUT / "staged-image-uploaded.png"), full_page=True)
    image = json.loads(world(staged, "image", "Uploaded through nginx"))
    assert (image["format"], image["size_bytes"]) == ("raw", disk.stat().st_size)
    assert image["volume_name"] in virsh("vol-list", libvirt_env["pool"]).stdout


@pytest.mark.browser
def test_a_customer_creates_a_vm_and_uses_its_page_and_consoles_over_https_and_wss(
    staged, staged_panel, staged_cast, staged_page, wait_until
):
    page = staged_page
    page.goto(f"{staged_panel}/accounts/login/")
    page.fill("#id_username", staged_cast["customer"])
    page.fill("#id_password", f"{staged_cast['customer']}-pass-123")
    page.click("main button[type=submit]")
    page.wait_for_url(f"{staged_panel}/vms/")

    page.get_by_role("link", name="Create VM").first.click()
    page.select_option("#id_plan", label=staged_cast["plan"])
    page.select_option("#id_image", label=staged_cast["image"])
    page.fill("#id_hostname", "staged-1")
    page.fill("#id_password", VM_PASSWORD)
    page.get_by_role("button", name="Create").click()
    # The page follows the VM from "creating" to "running" through its live websocket (wss://).
    settled(page, timeout=20_000)  # (page.wait_for_function would eval in the page: the CSP refuses it)
    wait_for_settled_state(page, "running", 180)
    page.screenshot(path=str(OUTPUT / "staged-vm-running.png"), full_page=True)

    page.get_by_role("link", name="Console").click()
    open_console_page(page)
    deadline = time.monotonic() + 30
    while canvas_colours(page) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert canvas_colours(page) >= 2, "the console (wss:// through nginx to the bridge) stayed blank"
    page.screenshot(path=str(OUTPUT / "staged-console-vnc.png"))
    back_to_the_vm_page(page)

    domain = "test-" + page.url.rstrip("/").rsplit("/", 1)[-1]
    try:
        page.get_by_role("link", name="Serial").click()
        page.wait_for_selector("#console-status[data-status='connected']", timeout=20_000)
        page.locator("#terminal").click()
        wait_until(lambda: "login:" in serial_text(domain), BOOT_TIMEOUT, "the guest's login prompt")
        log_in_on_serial(page, "debian", VM_PASSWORD)
        assert "staged-1" in serial_command(page, "hostname", "staged-1")
        page.screenshot(path=str(OUTPUT / "staged-console-serial.png"))
    finally:
        virsh("destroy", domain)  # an emulated guest takes a core: not for the rest of the session
