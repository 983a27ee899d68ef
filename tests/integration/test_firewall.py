"""A VM's firewall on a real guest: rules saved in Chromium block and then allow a port on the running
guest, tested from a peer namespace, with no reboot; and how long a change takes to apply.

Networks follow shared/NETWORK-TESTS.md (tests/netbed.py): documentation prefixes only, unreachable
routes in the root namespace first, the peer in a namespace of the test's own on a bridge with no
uplink. One guest boots for the whole test.
"""

import contextlib
import json
import os
import secrets
import subprocess
import time
from pathlib import Path

import pytest

import hypervisor
from firewall.models import FirewallRule
from hypervisor import FilterSpec, FirewallRuleSpec, FirewallSpec
from nodes.registration import register_node
from vms.choices import OperationKind

from .. import netbed
from .conftest import LOCAL_URI, OUTPUT, TEST_NODE
from .test_public_network import create_in_browser, pool, remove_vm, wait_for_operation

pytestmark = [pytest.mark.integration]

TAG = "f16"
GUEST_V4, GUEST_V6 = "198.51.100.10", "2001:db8:15::2"
SHOTS = Path(os.environ.get("KVMPANEL_SHOTS", "/tmp/shots-fw16"))
PEER_WEB_PORT = 8081


def test_a_firewall_filter_is_accepted_by_libvirtd_with_every_kind_of_rule():
    """The generated XML against the real nwfilter driver (no guest): it is taken and read back."""
    spec = FilterSpec(
        name=f"test-{TAG}-{secrets.token_hex(3)}",
        ipv4=("198.51.100.10",),
        ipv6=("2001:db8:15::2/128",),
        firewall=FirewallSpec(
            default_deny=True,
            rules=(
                FirewallRuleSpec("tcp", "", 22, 22),
                FirewallRuleSpec("udp", "203.0.113.0/24", 60000, 61000),
                FirewallRuleSpec("icmp", "2001:db8::/32"),
                FirewallRuleSpec("any", "198.51.100.1/32"),
            ),
        ),
    )
    with hypervisor.connect(LOCAL_URI) as session:
        try:
            session.define_filter(spec)
            session.define_filter(spec)  # an update of the same filter, as every change is
            stored = session.filter_xml(spec.name)
        finally:
            session.delete_filter(spec.name)
    for expected in ("<tcp-ipv6 dstportstart='22' dstportend='22'/>", "state='ESTABLISHED,RELATED'",
                     "statematch='false'", "<udp srcipaddr='203.0.113.0' srcipmask='24'",
                     "<icmpv6 srcipaddr='2001:db8::' srcipmask='32'/>"):  # fmt: skip
        assert expected in stored, stored


def test_the_firewall_drops_only_new_connections_towards_the_guest_never_what_it_sends():
    """The filter bound to a port of a bridge of the test's own (no addresses, no traffic), and the
    chains libvirt made read back. A drop without a state would land in every chain of the port, both
    ways, and drop the guest's neighbour advertisements (untracked): IPv6 stopped within a minute."""
    import libvirt

    port, bridge, name = f"test-{TAG}a", f"test-{TAG}dbr", f"test-{TAG}-{secrets.token_hex(3)}"
    spec = FilterSpec(name=name, ipv4=(GUEST_V4,), ipv6=(f"{GUEST_V6}/128",),
                      firewall=FirewallSpec(True, (FirewallRuleSpec("tcp", "", 22, 22),)))  # fmt: skip
    binding = f"""<filterbinding><owner><name>{name}</name><uuid>d0b1e2f3-0000-4000-8000-000000000016</uuid>
      </owner><portdev name='{port}'/><mac address='52:54:00:16:16:16'/><filterref filter='{name}'/>
      </filterbinding>"""
    connection = libvirt.open(LOCAL_URI)
    try:
        subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
        subprocess.run(["ip", "link", "add", port, "type", "veth", "peer", "name", f"{port}p"], check=True)
        subprocess.run(["ip", "link", "set", port, "master", bridge, "up"], check=True)
        with hypervisor.connect(LOCAL_URI) as session:
            session.define_filter(spec)
        connection.nwfilterBindingCreateXML(binding, 0)
        for tool in ("iptables-save", "ip6tables-save"):
            rules = subprocess.run([tool], capture_output=True, text=True, check=True).stdout.splitlines()
            towards = [r for r in rules if r.startswith(f"-A FO-{port} ")]
            sent = [r for r in rules if r.startswith((f"-A FI-{port} ", f"-A HI-{port} "))]
            assert towards[-1] == f"-A FO-{port} -m conntrack --ctstate INVALID,NEW -j DROP", (tool, towards)
            assert sent and not [r for r in sent if "DROP" in r or "REJECT" in r], (tool, sent)
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            connection.nwfilterBindingLookupByPortDev(port).delete()
        with contextlib.suppress(libvirt.libvirtError):
            connection.nwfilterLookupByName(name).undefine()
        connection.close()
        subprocess.run(["ip", "link", "del", port], check=False)
        subprocess.run(["ip", "link", "del", bridge], check=False)


@pytest.fixture(scope="module")
def bed(guarded):
    with netbed.bridged(TAG) as made:
        yield made


@pytest.fixture
def peer_web(bed):
    """A web server in the peer namespace: what the guest's own outbound connections reach."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", bed.namespace, "python3", "-m", "http.server", str(PEER_WEB_PORT)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    yield
    server.terminate()
    server.wait(10)


# Run in the peer namespace: try to connect every 50 ms (200 ms per try) until the port is as wanted;
# prints the seconds since it started. Started just before the click, so it times the whole change.
PROBE = """
import socket, sys, time
address, port, want, limit = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "open", float(sys.argv[4])
started = time.monotonic()
while time.monotonic() - started < limit:
    try:
        socket.create_connection((address, port), timeout=0.2).close()
        is_open = True
    except OSError:
        is_open = False
    if is_open == want:
        print(round(time.monotonic() - started, 3))
        sys.exit(0)
    time.sleep(0.05)
sys.exit(1)
"""


def start_probe(bed: netbed.Peer, address: str, port: int, want: str, limit: float = 60):
    return subprocess.Popen(
        ["ip", "netns", "exec", bed.namespace, "python3", "-c", PROBE, address, str(port), want, str(limit)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip


def probe_seconds(probe: subprocess.Popen, what: str) -> float:
    out, _ = probe.communicate(timeout=90)
    assert probe.returncode == 0, f"{what}: not within the probe's limit"
    return float(out.strip())


def open_from_peer(bed: netbed.Peer, address: str, port: int) -> bool:
    family = "-6" if ":" in address else "-4"
    return bed.run(["nc", family, "-z", "-w", "1", address, str(port)], timeout=10).returncode == 0


def guest(bed, key_path, command: str) -> str:
    answer = bed.ssh(key_path, GUEST_V4, command)
    assert answer.returncode == 0, answer.stderr
    return answer.stdout.strip()


def wait_applied(page, vm, timeout: float = 60) -> float:
    """Until the part says Applied (it reloads itself while applying); the operation must succeed."""
    operation = vm.operations.filter(kind=OperationKind.FIREWALL).order_by("-id").first()
    wait_for_operation(operation, timeout)
    page.wait_for_selector("#firewall[data-applying='no'] #firewall-status :text('Applied')", timeout=15_000)
    operation.refresh_from_db()
    return (operation.finished_at - operation.created_at).total_seconds()


def add_rule_in_browser(page, protocol: str, ports: str, comment: str = "", before_press=None):
    """Fill the part's form, call `before_press` (a probe starts), press Allow; returns when the press
    began (the save's start)."""
    form = page.locator("#firewall-add")
    form.locator("select[name=protocol]").select_option(protocol)
    form.locator("input[name=ports]").fill(ports)
    form.locator("input[name=comment]").fill(comment)
    extra = before_press() if before_press else None
    started = time.monotonic()
    form.get_by_role("button", name="Allow").click()
    return started, extra


@pytest.mark.browser
@pytest.mark.timeout(1500)
def test_a_rule_saved_in_the_browser_blocks_then_allows_a_port_on_a_running_guest(
    page,
    sign_in,
    panel_server,
    celery_worker,
    libvirt_env,
    customer,
    nano_plan,
    ssh_key,
    bed,
    peer_web,
    request,
):
    from tests.factories import make_image

    from .conftest import IMAGE_VOLUME

    node = register_node(
        TEST_NODE, LOCAL_URI, pool_name=libvirt_env["pool"], pool_path=libvirt_env["pool_path"],
        network_name=libvirt_env["network"], network_mode="bridged", bridge=bed.bridge,
    )  # fmt: skip
    pool(node, name="v4", prefix="198.51.100.0/25", gateway=netbed.PEER_V4, first_address=GUEST_V4,
         last_address="198.51.100.20", resolvers=netbed.PEER_V4)  # fmt: skip
    pool(node, name="v6", prefix="2001:db8:15::/64", gateway=netbed.PEER_V6, assign_prefix_length=128)
    image = make_image(name="Debian 12 (test)", volume_name=IMAGE_VOLUME, min_disk_gb=2, on=[node])
    key, key_path = ssh_key
    vm = create_in_browser(page, sign_in, customer, nano_plan, image, key, "fw-guest")
    request.addfinalizer(lambda: remove_vm(LOCAL_URI, vm))
    measured = {}

    # A listener in the guest, started over SSH from the peer; with no firewall everything gets in.
    guest(bed, key_path, "setsid -f python3 -m http.server --bind :: 8080 >/dev/null 2>&1 < /dev/null")
    boot_id = guest(bed, key_path, "cat /proc/sys/kernel/random/boot_id")
    listener = guest(bed, key_path, "sleep 1; pgrep -f 'http[.]server'")
    assert listener, "the listener did not start"
    assert open_from_peer(bed, GUEST_V4, 8080) and open_from_peer(bed, GUEST_V6, 8080)
    domain_id = hypervisor_domain_id(vm)

    # In the browser: allow SSH, then deny everything else.
    page.goto(f"{panel_server}/vms/{vm.uuid}/")
    page.wait_for_selector("#firewall #firewall-add")
    add_rule_in_browser(page, "tcp", "22", "ssh")
    measured["add ssh rule: operation"] = wait_applied(page, vm)
    page.locator("#firewall-policy select").select_option("deny")
    probe = start_probe(bed, GUEST_V4, 8080, "closed")
    page.locator("#firewall-policy").get_by_role("button", name="Save policy").click()
    measured["deny policy: save -> 8080 closed (s)"] = probe_seconds(probe, "8080 closing")
    measured["deny policy: operation"] = wait_applied(page, vm)
    page.locator("#firewall").screenshot(path=str(SHOTS / "firewall-deny-ssh-only.png"))

    assert not open_from_peer(bed, GUEST_V4, 8080), "8080 still answers under deny"
    assert not open_from_peer(bed, GUEST_V6, 8080), "8080 still answers over IPv6 under deny"
    assert open_from_peer(bed, GUEST_V4, 22) and open_from_peer(bed, GUEST_V6, 22)  # the allowed port
    assert bed.run(["ping", "-c", "1", "-W", "2", GUEST_V4]).returncode != 0  # no rule for ICMP
    # The VM's own outbound connections, and their replies, still work.
    fetch = f"print(u.urlopen('http://{netbed.PEER_V4}:{PEER_WEB_PORT}/', timeout=10).status)"
    fetched = guest(bed, key_path, f'python3 -c "import urllib.request as u; {fetch}"')
    assert fetched == "200"

    # The rule for 8080, added in the browser: the port answers within seconds, the guest never restarted.
    started, probe = add_rule_in_browser(
        page, "tcp", "8080", "web", before_press=lambda: start_probe(bed, GUEST_V4, 8080, "open")
    )
    seen = time.monotonic()
    measured["allow 8080: save -> 8080 answers (s)"] = probe_seconds(probe, "8080 opening")
    measured["allow 8080: press -> page back (s)"] = round(seen - started, 3)
    measured["allow 8080: operation"] = wait_applied(page, vm)
    assert open_from_peer(bed, GUEST_V6, 8080)
    page.locator("#firewall").screenshot(path=str(SHOTS / "firewall-8080-allowed.png"))
    page.screenshot(path=str(SHOTS / "vm-page-with-firewall.png"), full_page=True)
    assert guest(bed, key_path, "cat /proc/sys/kernel/random/boot_id") == boot_id  # no reboot
    assert guest(bed, key_path, "pgrep -f 'http[.]server'") == listener  # the same listener
    assert hypervisor_domain_id(vm) == domain_id  # the same QEMU process
    assert [r.describe() for r in FirewallRule.objects.filter(firewall__vm=vm)] == [
        "TCP 22 from anywhere",
        "TCP 8080 from anywhere",
    ]

    # Removing it in the browser closes the port again.
    probe = start_probe(bed, GUEST_V4, 8080, "closed")
    page.locator("#firewall-rules tr[data-rule='tcp 8080'] button").click()
    measured["remove 8080: save -> 8080 closed (s)"] = probe_seconds(probe, "8080 closing again")
    wait_applied(page, vm)
    assert not open_from_peer(bed, GUEST_V4, 8080)

    report = json.dumps(measured, indent=2)
    print(f"\nfirewall timings:\n{report}")
    OUTPUT.mkdir(exist_ok=True)
    (OUTPUT / "firewall-timings.json").write_text(report)


def hypervisor_domain_id(vm) -> str:
    answer = subprocess.run(
        ["virsh", "-c", LOCAL_URI, "domid", vm.domain_name], capture_output=True, text=True
    )
    return answer.stdout.strip()
