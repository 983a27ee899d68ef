"""A customer runs a real VM through its whole life in Chromium, with a real worker, libvirtd and consoles.

One guest boot is shared by the steps that need a booted guest (consoles, reboot,
ACPI shutdown): under emulation a boot takes about a minute.
"""

import base64
import os
import socket
import time
from urllib.parse import urlparse

import pytest
from django.test import Client
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from vms.choices import OperationStatus, VMState
from vms.models import Operation, VirtualMachine, VMUsage

from ..factories import make_user
from .conftest import (
    OUTPUT,
    domain_state,
    fill_create_form,
    nudge_serial_port,
    serial_text,
    settled,
    virsh,
    wait_for_js,
)

pytestmark = [pytest.mark.integration, pytest.mark.browser]

BOOT_TIMEOUT = 300  # under emulation a guest needs about a minute to its login prompt


def wait_for_settled_state(page, state: str, timeout_s: float):
    """The state badge shows `state`, no operation is running, and the page has settled (its live
    socket open, no refresh under way): what a click needs, so no swap takes the button from under it."""
    page.wait_for_selector(f"#vm-state[data-state='{state}']:not([data-busy])", timeout=timeout_s * 1000)
    settled(page)


# Actions that ask first (static/js/confirm.js): the dialog's button of the same name confirms.
CONFIRMED = {"Force off", "Reboot"}


def click_and_wait_for_state(page, button: str, state: str, timeout_s: float):
    settled(page)
    page.get_by_role("button", name=button).click()
    if button in CONFIRMED:
        page.locator("#confirm-modal.show").get_by_role("button", name=button).click()
    wait_for_settled_state(page, state, timeout_s)


def back_to_the_vm_page(page):
    """Browser back to the VM page, then wait for it to settle before anything is clicked there."""
    page.go_back()
    page.wait_for_selector("#vm-state")
    settled(page)


def last_operation(vm) -> Operation:
    return vm.operations.order_by("-created_at", "-id").first()


def kernel_started_again(vm) -> bool:
    """The guest rebooted: its kernel printed its banner a second time since the domain started."""
    return serial_text(vm.domain_name).count("Linux version") >= 2


def canvas_colours(page) -> int:
    """How many distinct colours the noVNC canvas shows (a blank canvas has one)."""
    return page.evaluate(
        """() => {
            const canvas = document.querySelector('#screen canvas');
            if (!canvas || !canvas.width) return 0;
            const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
            const seen = new Set();
            for (let i = 0; i < data.length; i += 4 * 97) {
                seen.add((data[i] << 16) | (data[i + 1] << 8) | data[i + 2]);
            }
            return seen.size;
        }"""
    )


def websocket_status(url: str, origin: str, cookie: str) -> int:
    """The HTTP status a WebSocket upgrade to `url` gets (101 when accepted)."""
    target = urlparse(url)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {target.path or '/'}?{target.query} HTTP/1.1\r\nHost: {target.netloc}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Protocol: binary\r\n"
        f"Origin: {origin}\r\nCookie: {cookie}\r\n\r\n"
    )
    with socket.create_connection((target.hostname, target.port), timeout=10) as conn:
        conn.sendall(request.encode())
        reply = conn.recv(1024).decode("latin1")
    return int(reply.split()[1]) if reply.startswith("HTTP/") else 0


def new_console_url(page, panel_server, vm) -> str:
    response = page.request.post(
        f"{panel_server}/vms/{vm.uuid}/console/token/",
        headers={"X-CSRFToken": csrf_cookie(page), "Referer": f"{panel_server}/"},
    )
    assert response.status == 200, response.text()
    return response.json()["url"]


def csrf_cookie(page) -> str:
    return next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")


def session_cookie(page) -> str:
    return next(f"sessionid={c['value']}" for c in page.context.cookies() if c["name"] == "sessionid")


def check_graphical_console(page, panel_server, vm):
    settled(page)
    started = time.monotonic()
    page.get_by_role("link", name="Console").click()
    open_console_page(page)
    deadline = time.monotonic() + 20
    while canvas_colours(page) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    first_frame = time.monotonic() - started
    assert canvas_colours(page) >= 2, "the console canvas stayed blank"
    page.screenshot(path=str(OUTPUT / "console-vnc.png"))
    print(f"\nclick Console -> first frame: {first_frame:.2f} s")
    # The page got a ticket, never an address or a password it could reuse.
    html = page.content()
    assert vm.vnc_password not in html and "5900" not in html


def open_console_page(page, attempts: int = 3):
    """Wait for the console to connect; reload if the page's module script never started.

    Seen in full-suite runs before no_link_local_addresses_on_new_devices():
    Chromium aborted the noVNC modules' requests with net::ERR_NETWORK_CHANGED.
    Each retry is reported, with what the browser said, so any return is visible.
    """
    messages = []
    page.on("console", lambda message: messages.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: messages.append(f"pageerror: {error}"))
    for attempt in range(1, attempts + 1):
        try:
            page.wait_for_selector("#console-status[data-status='connected']", timeout=20_000)
            return
        except PlaywrightTimeout:
            status = page.inner_text("#console-status")
            print(f"\nconsole not connected (attempt {attempt}, status {status!r}); browser said: {messages}")
            if attempt == attempts:
                raise
            page.reload()


def check_console_tickets(page, panel_server, console_bridge, vm):
    origin, cookie = panel_server, session_cookie(page)
    url = new_console_url(page, panel_server, vm)
    assert websocket_status(url, origin, cookie) == 101
    assert websocket_status(url, origin, cookie) == 403, "a replayed ticket must be refused"
    assert websocket_status(new_console_url(page, panel_server, vm), "http://evil.example", cookie) == 403
    stranger = make_user("mallory")
    client = Client()
    client.force_login(stranger)
    strangers_cookie = f"sessionid={client.cookies['sessionid'].value}"
    assert websocket_status(new_console_url(page, panel_server, vm), origin, strangers_cookie) == 403


def check_serial_console(page, vm, password: str, key_data: str):
    back_to_the_vm_page(page)
    page.get_by_role("link", name="Serial").click()
    page.wait_for_selector("#console-status[data-status='connected']", timeout=20_000)
    page.locator("#terminal").click()
    log_in_on_serial(page, vm.image.default_user, password, vm=vm)
    # What cloud-init made of the seed, read inside the guest: its hostname and the chosen key.
    output = serial_command(page, "hostname; cat ~/.ssh/authorized_keys", key_data, vm=vm)
    assert vm.hostname in output and key_data in output
    assert_clean_console(output, vm.image.default_user, vm.hostname)
    page.screenshot(path=str(OUTPUT / "console-serial.png"))
    log_out_on_serial(page)
    check_second_serial_viewer(page)
    back_to_the_vm_page(page)


TERMINAL_TEXT = "document.querySelector('#terminal .xterm-rows').innerText"


def assert_clean_console(screen: str, user: str, hostname: str) -> None:
    """Nothing the guest prints at boot cuts into the login: every prompt line starts as it should
    (once, cloud-init's banners gave "GPassword:" and "tusian@…")."""
    lines = [line.strip() for line in screen.splitlines()]
    logins = [line for line in lines if f"{hostname} login:" in line]
    assert all(line.startswith(f"{hostname} login:") for line in logins), screen
    assert all(line.startswith("Password:") for line in lines if "Password:" in line), screen
    # A shell prompt is "user@host:"; cloud-init's host keys, which may print after the login, end
    # in "root@host" without the colon.
    prompts = [line for line in lines if f"@{hostname}:" in line]
    assert prompts and all(line.startswith(f"{user}@{hostname}:") for line in prompts), screen


def wait_on_serial(page, expression: str, arg=None, timeout_ms: int = 60_000, vm=None) -> None:
    """wait_for_js on the serial console's screen. Given the `vm`, a wait that runs out nudges the
    guest's serial port once (it may have lost an interrupt, with the typed line waiting in it: see
    conftest.nudge_serial_port) and waits again."""
    try:
        wait_for_js(page, expression, arg, timeout_ms)
    except AssertionError:
        if vm is None:
            raise
        print(f"\nno answer on {vm.hostname}'s serial console; nudged its port: {nudge_serial_port(vm)}")
        wait_for_js(page, expression, arg, timeout_ms)


def wait_for_more(page, expect: str, seen: int, timeout_ms: int = 60_000, vm=None) -> None:
    """Wait until the serial console's screen shows `expect` more than `seen` times."""
    more = f"([e, n]) => {TERMINAL_TEXT}.split(e).length - 1 > n"
    wait_on_serial(page, more, [expect, seen], timeout_ms, vm)


def serial_command(page, command: str, expect: str, timeout_ms: int = 60_000, vm=None) -> str:
    """Type a line into the serial console and wait until `expect` shows once more; returns the screen."""
    seen = page.evaluate(TERMINAL_TEXT).count(expect)
    page.keyboard.type(command)
    page.keyboard.press("Enter")
    wait_for_more(page, expect, seen, timeout_ms, vm)
    return page.evaluate(TERMINAL_TEXT)


def log_out_on_serial(page):
    """Leave the shell; getty clears the screen and asks for a login again."""
    page.keyboard.type("exit")
    page.keyboard.press("Enter")
    wait_for_js(page, f"() => {TERMINAL_TEXT}.trimEnd().endsWith('login:')", timeout=30_000)


def log_in_on_serial(page, user: str, password: str, attempts: int = 6, vm=None):
    """Log in as the image's default user with the password the seed set.

    cloud-init sets the password in its config stage, which may end a little after
    the first login prompt: an early attempt can fail, so a few are allowed.
    """
    page.keyboard.press("Enter")
    wait_for_js(page, f"() => {TERMINAL_TEXT}.includes('login:')", timeout=30_000)
    answered = (
        f"() => {{ const t = {TERMINAL_TEXT}; const after = t.slice(t.lastIndexOf('Password:'));"
        " return after.includes('Login incorrect') || after.trimEnd().endsWith('$'); }"
    )
    for _ in range(attempts):
        serial_command(page, user, "Password:", vm=vm)
        page.keyboard.type(password)
        page.keyboard.press("Enter")
        wait_on_serial(page, answered, vm=vm)
        if "Login incorrect" not in page.evaluate(TERMINAL_TEXT).rsplit("Password:", 1)[-1]:
            return
        page.wait_for_timeout(5_000)
    raise AssertionError(f"could not log in as {user} with the seeded password")


def check_second_serial_viewer(page):
    """A second window is told the console is busy and may take it over; nothing is interleaved."""
    second = page.context.new_page()
    second.goto(page.url)
    second.wait_for_selector("#console-status[data-status='disconnected']", timeout=20_000)
    assert "open in another window" in second.inner_text("#console-status")
    second.get_by_role("button", name="Take over").click()
    second.wait_for_selector("#console-status[data-status='connected']", timeout=20_000)
    page.wait_for_selector("#console-status[data-status='disconnected']", timeout=20_000)
    assert "took it over" in page.inner_text("#console-status")
    second.close()  # leaving the page frees the console for the first window
    reconnect_serial(page)


def reconnect_serial(page, attempts: int = 3):
    """Press Reconnect until connected, as a user would after a dropped connection (and say so)."""
    for attempt in range(1, attempts + 1):
        page.get_by_role("button", name="Reconnect").click()
        try:
            page.wait_for_selector("#console-status[data-status='connected']", timeout=10_000)
            return
        except PlaywrightTimeout:
            status = page.inner_text("#console-status")
            print(f"\nserial console not connected (attempt {attempt}, status {status!r})")
    raise AssertionError(f"the serial console did not reconnect in {attempts} attempts")


def check_usage_graphs(page, vm, wait_until):
    """The VM page draws the guest's real usage, and the hour graph grows as readings arrive."""
    assert VMUsage.objects.filter(vm=vm, cpu_percent__gt=0).exists()  # the guest has been booting
    page.wait_for_selector("[data-chart='cpu'] canvas", timeout=10_000)
    legend = "document.querySelector('[data-chart=cpu] .u-series:nth-child(2) .u-value').textContent"
    assert page.evaluate(legend).endswith("%")  # the newest reading, e.g. "12.3 %"
    fetches = "performance.getEntriesByType('resource').filter(e => e.name.includes('/usage/')).length"
    seen, stored = page.evaluate(fetches), VMUsage.objects.filter(vm=vm).count()
    # The next reading (every 2 s in tests) is pushed, and the page fetches the graph data again.
    wait_until(lambda: VMUsage.objects.filter(vm=vm).count() > stored, 10, "the next usage reading")
    wait_for_js(page, f"{fetches} > {seen}", timeout=10_000)
    for name in ("cpu", "memory", "disk", "network"):
        assert page.locator(f"[data-chart='{name}'] canvas").count() == 1
    page.locator("#usage").screenshot(path=str(OUTPUT / "vm-usage.png"))


def check_changes_made_outside_the_panel_show_live(page, panel_server, vm):
    """virsh destroy / start behind the panel's back: open pages follow within about a second."""
    listing = page.context.new_page()
    listing.goto(f"{panel_server}/vms/")
    settled(listing)
    settled(page)
    assert virsh("destroy", vm.domain_name).returncode == 0
    started = time.monotonic()  # virsh returns when the domain is off; the event follows
    wait_for_settled_state(page, "stopped", 2)
    print(f"\nvirsh destroy -> VM page shows stopped: {time.monotonic() - started:.2f} s")
    listing.wait_for_selector(f"[data-vm='{vm.uuid}'] [data-state='stopped']", timeout=5_000)
    assert virsh("start", vm.domain_name).returncode == 0
    wait_for_settled_state(page, "running", 5)
    listing.wait_for_selector(f"[data-vm='{vm.uuid}'] [data-state='running']", timeout=5_000)
    listing.close()


FIRST_PASSWORD = "first-Boot-pw-2026"
RESET_PASSWORD = "set-By-Agent-pw-5"
ISO_TEXT = "hello from the library ISO"
SECOND_PASSWORD = "after-Reinstall-pw-7"


def add_ssh_key(user):
    """An Ed25519 key in the customer's account, as the SSH keys page would store it."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from accounts.models import SSHKey
    from accounts.sshkeys import parse_public_key

    line = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH)
    parsed = parse_public_key(line.decode() + " carol@laptop")
    return SSHKey.objects.create(
        user=user, name="laptop", public_key=parsed.public_key, fingerprint=parsed.fingerprint
    )


@pytest.fixture
def library_iso(node):
    """A small ISO in the node's pool, in the library as customers see it."""
    import io

    import pycdlib

    import hypervisor
    from images.models import Image

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, rock_ridge="1.09", vol_ident="KVMPANELTEST")
    text = f"{ISO_TEXT}\n".encode()
    iso.add_fp(io.BytesIO(text), len(text), "/HELLO.TXT;1", rr_name="hello.txt")
    data = io.BytesIO()
    iso.write_fp(data)
    volume = f"test-iso-{os.getpid()}.iso"
    with hypervisor.connect(node.uri) as session:
        session.upload_bytes(node.pool_name, volume, data.getvalue())
    iso = Image.objects.create(name="Tools CD", volume_name=volume, format="iso")
    iso.placements.update_or_create(node=node, defaults={"ready": True})
    return iso


def check_password_reset_and_iso(page, vm, iso):
    """The guest agent sets a new password; an ISO goes into the running VM and comes out again."""
    page.get_by_role("link", name="Password").click()
    page.fill("#id_password", RESET_PASSWORD)
    page.get_by_role("button", name="Set password").click()
    wait_for_settled_state(page, "running", 60)
    assert (last_operation(vm).kind, last_operation(vm).status) == ("reset_password", "succeeded")

    page.select_option("select[name=iso]", label=iso.name)
    page.get_by_role("button", name="Insert").click()
    wait_for_settled_state(page, "running", 60)
    assert iso.volume_name in virsh("dumpxml", vm.domain_name).stdout  # in the running domain now

    page.get_by_role("link", name="Serial").click()
    page.wait_for_selector("#console-status[data-status='connected']", timeout=20_000)
    page.locator("#terminal").click()
    log_in_on_serial(page, vm.image.default_user, RESET_PASSWORD, vm=vm)  # the agent's password works
    # The ISO is the second CD drive in the guest (the seed is the first).
    # The marker is computed by the shell, so the typed line itself never matches it.
    command = "sudo mount -o ro /dev/sr1 /mnt && cat /mnt/hello.txt; sudo umount /mnt; echo done-$((6*7))"
    assert ISO_TEXT in serial_command(page, command, "done-42", vm=vm)
    log_out_on_serial(page)
    back_to_the_vm_page(page)

    page.get_by_role("button", name="Eject").click()
    wait_for_settled_state(page, "running", 60)
    assert iso.volume_name not in virsh("dumpxml", vm.domain_name).stdout


def check_reinstall(page, vm, wait_until):
    """Reinstall with a new password: a fresh disk and seed, the same VM; the new password logs in."""
    page.get_by_role("link", name="Reinstall").click()
    page.fill("#id_password", SECOND_PASSWORD)
    page.fill("#id_confirm_hostname", vm.hostname)
    page.get_by_role("button", name="Erase and reinstall").click()
    wait_for_settled_state(page, "running", 120)
    vm.refresh_from_db()
    assert (last_operation(vm).kind, last_operation(vm).status, vm.installs) == ("reinstall", "succeeded", 2)
    wait_until(lambda: "login:" in serial_text(vm.domain_name), BOOT_TIMEOUT, "the reinstalled guest's login")
    page.get_by_role("link", name="Serial").click()
    page.wait_for_selector("#console-status[data-status='connected']", timeout=20_000)
    page.locator("#terminal").click()
    log_in_on_serial(page, vm.image.default_user, SECOND_PASSWORD, vm=vm)
    assert vm.hostname in serial_command(page, "hostname", vm.hostname, vm=vm)
    log_out_on_serial(page)
    back_to_the_vm_page(page)


def test_a_customer_runs_a_vm_through_its_life_in_the_browser(
    page,
    sign_in,
    panel_server,
    console_bridge,
    node_monitor,
    customer,
    node,
    demo_image,
    nano_plan,
    celery_worker,
    wait_until,
    library_iso,
):
    key = add_ssh_key(customer)
    sign_in(page, customer)
    fill_create_form(page, nano_plan, demo_image, "life-1", FIRST_PASSWORD, key=key)

    wait_for_settled_state(page, "running", 120)
    vm = VirtualMachine.objects.get(hostname="life-1")
    assert vm.owner == customer and vm.domain_name.startswith("test-")
    assert domain_state(vm.domain_name) == "running"
    assert last_operation(vm).status == OperationStatus.SUCCEEDED
    page.screenshot(path=str(OUTPUT / "vm-running.png"), full_page=True)

    check_graphical_console(page, panel_server, vm)
    check_console_tickets(page, panel_server, console_bridge, vm)
    wait_until(lambda: "login:" in serial_text(vm.domain_name), BOOT_TIMEOUT, "the guest's login prompt")
    check_serial_console(page, vm, FIRST_PASSWORD, key.public_key.split()[1])
    check_usage_graphs(page, vm, wait_until)
    check_password_reset_and_iso(page, vm, library_iso)

    wait_for_settled_state(page, "running", 10)
    click_and_wait_for_state(page, "Shut down", "stopped", 120)
    assert domain_state(vm.domain_name) == "shut off"

    click_and_wait_for_state(page, "Start", "running", 60)
    assert domain_state(vm.domain_name) == "running"
    check_changes_made_outside_the_panel_show_live(page, panel_server, vm)

    click_and_wait_for_state(page, "Force off", "stopped", 60)
    assert domain_state(vm.domain_name) == "shut off"
    check_reinstall(page, vm, wait_until)  # boots the new install to its login prompt

    click_and_wait_for_state(page, "Reboot", "running", 60)
    assert last_operation(vm).kind == "reboot"
    wait_until(lambda: kernel_started_again(vm), BOOT_TIMEOUT, "the guest's kernel starting again")

    page.get_by_role("link", name="Delete").click()
    page.wait_for_url("**/accounts/confirm/**")  # signed in minutes ago: the password again
    page.fill("#id_password", f"{vm.owner.username}-pass-123")
    page.get_by_role("button", name="Confirm").click()
    page.fill("#confirm_hostname", "life-1")
    page.get_by_role("button", name="Delete this VM").click()
    page.wait_for_url(f"{panel_server}/vms/", timeout=60_000)
    vm.refresh_from_db()
    assert vm.state == VMState.DELETED
    assert domain_state(vm.domain_name) == "absent"
    volumes = virsh("vol-list", node.pool_name).stdout
    assert vm.disk_volume not in volumes
    assert demo_image.volume_name in volumes  # the image is never touched
    assert [op.status for op in vm.operations.all()] == ["succeeded"] * 10
    assert not any("password_hash" in op.params for op in vm.operations.all())  # dropped when done
