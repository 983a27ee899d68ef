"""Reverse DNS through a real PowerDNS (tests/powerdns.py): zones made with pools, a PTR for every
allocated address and none once released, customers' names from the portal and the API, a server
that is away, and the setting that turns it all off. Answers are checked with `dig -x`."""

import ipaddress

import pytest
from django.core.exceptions import ValidationError

from accounts.models import AuditEntry
from network import allocation, rdns
from network.models import Address, Pool
from network.pdns import PowerDNS
from nodes.choices import NetworkMode
from vms import networking

from .factories import make_node, make_plan, make_user, make_vm

pytestmark = pytest.mark.django_db


@pytest.fixture
def committing(django_capture_on_commit_callbacks):
    """Run what waits for the commit (the tasks' doorbells) at the end of the block."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


@pytest.fixture
def bridged_node():
    return make_node(network_mode=NetworkMode.BRIDGED, bridge="br0")


def make_pool(node, prefix="198.51.100.0/24", gateway="198.51.100.1", **fields) -> Pool:
    pool = Pool(name=f"pool-{prefix}", prefix=prefix, gateway=gateway, **fields)
    pool.full_clean()
    pool.save()
    pool.nodes.add(node)
    return pool


def vm_with_address(owner, node, committing, hostname="web"):
    vm = make_vm(owner, node=node, hostname=hostname, plan=make_plan(ipv6_networks=0))
    with committing():
        [address] = networking.allocate_for_new_vm(vm)
    address.refresh_from_db()
    return vm, address


# --- names and zones ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ("mail.example.com", "mail.example.com."),
        ("Mail.Example.COM.", "mail.example.com."),
        ("a-b.c1.example.net", "a-b.c1.example.net."),
    ],
)
def test_a_ptr_name_is_a_lower_case_fqdn_with_its_dot(value, expected):
    assert rdns.normalize_fqdn(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "localhost",  # no domain
        "-bad.example.com",
        "bad-.example.com",
        "under_score.example.com",
        "spaces in.example.com",
        "a" * 64 + ".example.com",  # a label of 64
        ".".join(["abcdefghi"] * 26) + ".com",  # 263 characters
        "mail.example.123",
        "evil.example.com\nIN A 1.2.3.4",
        "",
    ],
)
def test_a_name_that_is_no_fqdn_is_refused(value):
    with pytest.raises(ValidationError):
        rdns.normalize_fqdn(value)


def test_a_name_of_253_characters_is_accepted():
    name = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
    assert len(name) == 253 and rdns.normalize_fqdn(name) == name + "."


def test_the_default_name_follows_the_operators_template(settings):
    settings.KVMPANEL_RDNS_DEFAULT = "{ip_dashed}.customers.example.net"
    assert rdns.default_ptr("web", "198.51.100.10") == "198-51-100-10.customers.example.net."
    settings.KVMPANEL_RDNS_DEFAULT = "{hostname}."
    assert rdns.default_ptr("web.example.org", "198.51.100.10") == "web.example.org."
    assert rdns.default_ptr("web", "198.51.100.10") == ""  # a bare hostname is no FQDN: no PTR


@pytest.mark.parametrize(
    "prefix, zones",
    [
        ("198.51.100.0/24", ["100.51.198.in-addr.arpa."]),
        ("198.51.100.8/29", ["100.51.198.in-addr.arpa."]),
        ("203.0.112.0/23", ["112.0.203.in-addr.arpa.", "113.0.203.in-addr.arpa."]),
        ("2001:db8:16::/48", ["6.1.0.0.8.b.d.0.1.0.0.2.ip6.arpa."]),
        ("2001:db8:16::/47", ["6.1.0.0.8.b.d.0.1.0.0.2.ip6.arpa.", "7.1.0.0.8.b.d.0.1.0.0.2.ip6.arpa."]),
    ],
)
def test_a_pools_reverse_zones_cut_at_octets_or_nibbles(bridged_node, prefix, zones):
    network = ipaddress.ip_network(prefix)
    pool = make_pool(bridged_node, prefix=prefix, gateway=str(network[1]) if network.version == 4 else None)
    assert rdns.pool_zones(pool) == zones


# --- with a real PowerDNS ------------------------------------------------------------------


def test_a_pools_reverse_zone_is_made_with_the_pool(powerdns, bridged_node, committing):
    with committing():
        make_pool(bridged_node, prefix="203.0.113.0/24", gateway="203.0.113.1")
    dns = PowerDNS(powerdns.url, powerdns.api_key)
    zone = dns.zone("113.0.203.in-addr.arpa.")
    assert zone is not None and zone["kind"] == "Native"


def test_an_allocated_address_gets_the_default_ptr_and_loses_it_when_released(
    powerdns, bridged_node, alice, committing
):
    make_pool(bridged_node)
    vm, address = vm_with_address(alice, bridged_node, committing)
    assert (
        address.ptr == address.ptr_published == f"{address.address.replace('.', '-')}.customers.example.net."
    )
    assert powerdns.dig(address.address) == address.ptr
    with committing():
        networking.release_all(vm)
    address.refresh_from_db()
    assert (address.ptr, address.ptr_published) == ("", "")
    assert powerdns.dig(address.address) == ""


def test_an_ipv6_networks_ptr_names_the_address_the_vm_answers_on(powerdns, bridged_node, alice, committing):
    make_pool(bridged_node, prefix="2001:db8:16::/48", gateway=None)
    vm = make_vm(alice, node=bridged_node, plan=make_plan(ipv4_addresses=0, ipv6_networks=1))
    with committing():
        [network] = networking.allocate_for_new_vm(vm)
    assert network.is_network
    assert (
        powerdns.dig(network.host_address)
        == f"{network.host_address.replace(':', '-')}.customers.example.net."
    )


def test_a_customer_names_their_address_on_the_vm_page(powerdns, client, bridged_node, alice, committing):
    make_pool(bridged_node)
    vm, address = vm_with_address(alice, bridged_node, committing)
    client.force_login(alice)
    with committing():
        response = client.post(
            f"/vms/{vm.uuid}/addresses/{address.pk}/ptr/", {"ptr": "Mail.Example.com"}, follow=True
        )
    assert "set to mail.example.com" in response.content.decode()
    assert powerdns.dig(address.address) == "mail.example.com."
    entry = AuditEntry.objects.filter(action="address.ptr").latest("pk")
    assert entry.actor == alice and entry.detail == f"{address.address}: mail.example.com."
    page = client.get(vm.get_absolute_url()).content.decode()
    assert 'data-rdns-state="published"' in page and 'value="mail.example.com"' in page


def test_a_bad_name_is_refused_and_nothing_changes(powerdns, client, bridged_node, alice, committing):
    make_pool(bridged_node)
    vm, address = vm_with_address(alice, bridged_node, committing)
    before = address.ptr
    client.force_login(alice)
    response = client.post(f"/vms/{vm.uuid}/addresses/{address.pk}/ptr/", {"ptr": "x" * 300}, follow=True)
    assert "not saved" in response.content.decode()
    address.refresh_from_db()
    assert address.ptr == before and powerdns.dig(address.address) == before
    assert AuditEntry.objects.filter(action="address.ptr", outcome="refused").exists()


def test_another_customers_address_answers_404(client, bridged_node, alice, committing, settings):
    settings.KVMPANEL_RDNS_ENABLED = True
    make_pool(bridged_node)
    vm, address = vm_with_address(alice, bridged_node, committing)
    bob = make_user("bob")
    bobs_vm = make_vm(bob, node=bridged_node)
    client.force_login(bob)
    assert (
        client.post(f"/vms/{vm.uuid}/addresses/{address.pk}/ptr/", {"ptr": "x.example.com"}).status_code
        == 404
    )
    # Bob's own VM with Alice's address id: still not found.
    response = client.post(f"/vms/{bobs_vm.uuid}/addresses/{address.pk}/ptr/", {"ptr": "x.example.com"})
    assert response.status_code == 404
    assert Address.objects.get(pk=address.pk).ptr != "x.example.com."


def test_the_api_sets_a_ptr_and_refuses_outsiders(powerdns, api_client, bridged_node, alice, committing):
    make_pool(bridged_node)
    vm, address = vm_with_address(alice, bridged_node, committing)
    url = f"/api/v1/vms/{vm.uuid}/addresses/{address.pk}/ptr/"
    with committing():
        response = api_client(alice).put(url, {"ptr": "smtp.example.org"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["ptr"] == "smtp.example.org."
    assert powerdns.dig(address.address) == "smtp.example.org."
    assert api_client(alice).put(url, {"ptr": "no_underscores.example.org"}, format="json").status_code == 400
    assert api_client(make_user("bob")).put(url, {"ptr": "x.example.org"}, format="json").status_code == 404
    detail = api_client(alice).get(f"/api/v1/vms/{vm.uuid}/").json()
    assert (
        detail["addresses"][0]["ptr"] == "smtp.example.org."
        and detail["addresses"][0]["ptr_pending"] is False
    )


def test_a_change_waits_while_powerdns_is_down_and_is_published_when_it_is_back(
    powerdns, client, bridged_node, alice, committing
):
    make_pool(bridged_node)
    vm, address = vm_with_address(alice, bridged_node, committing)
    powerdns.stop()
    client.force_login(alice)
    with committing():
        client.post(f"/vms/{vm.uuid}/addresses/{address.pk}/ptr/", {"ptr": "mx.example.com"})
    address.refresh_from_db()
    assert address.ptr == "mx.example.com." and address.ptr_pending
    assert "not answering" in address.ptr_error
    page = client.get(vm.get_absolute_url()).content.decode()
    assert "waiting for DNS" in page
    assert rdns.sweep() == {"synced": 0, "waiting": 1}  # still away: kept, tried again later
    powerdns.start()
    assert rdns.sweep() == {"synced": 1, "waiting": 0}
    assert powerdns.dig(address.address) == "mx.example.com."
    address.refresh_from_db()
    assert not address.ptr_pending and address.ptr_error == ""
    assert "waiting for DNS" not in client.get(vm.get_absolute_url()).content.decode()


def test_rdns_turned_off_touches_no_dns_and_offers_nothing(
    client, bridged_node, alice, committing, monkeypatch
):
    monkeypatch.setattr(rdns, "client", lambda: pytest.fail("PowerDNS was called"))
    make_pool(bridged_node)
    vm, address = vm_with_address(alice, bridged_node, committing)
    assert address.ptr == ""
    client.force_login(alice)
    assert 'id="rdns"' not in client.get(vm.get_absolute_url()).content.decode()
    response = client.post(
        f"/vms/{vm.uuid}/addresses/{address.pk}/ptr/", {"ptr": "x.example.com"}, follow=True
    )
    assert "managed elsewhere" in response.content.decode()
    assert rdns.sweep() == {"synced": 0, "waiting": 0}


def test_a_reused_address_gets_the_new_holders_name(powerdns, bridged_node, alice, committing, settings):
    settings.KVMPANEL_ADDRESS_COOLDOWN_HOURS = 0
    make_pool(bridged_node, prefix="198.51.100.8/30", gateway="198.51.100.9")  # one usable address
    vm, address = vm_with_address(alice, bridged_node, committing)
    with committing():
        rdns.set_ptr(address, "old.example.com")
    with committing():
        networking.release_all(vm)
    settings.KVMPANEL_RDNS_DEFAULT = "{hostname}."
    vm2 = make_vm(alice, node=bridged_node, hostname="new.example.com", plan=make_plan(ipv6_networks=0))
    with committing():
        [again] = networking.allocate_for_new_vm(vm2)
    assert again.pk == address.pk
    assert powerdns.dig(again.address) == "new.example.com."


def test_allocation_outside_rdns_is_unchanged(bridged_node, alice):
    """The allocator itself gives no name: the allocating side does (so staff's pools stay plain)."""
    make_pool(bridged_node)
    vm = make_vm(alice, node=bridged_node)
    nic = vm.interfaces.create()
    assert allocation.allocate(bridged_node, nic, 4).ptr == ""


def test_the_rdns_server_command_writes_a_loopback_server_with_the_panels_key(settings, tmp_path, capsys):
    from django.core.management import CommandError, call_command

    settings.KVMPANEL_PDNS_DIR = str(tmp_path / "pdns")
    settings.KVMPANEL_PDNS_URL = "http://127.0.0.1:18181"
    settings.KVMPANEL_PDNS_API_KEY = "the-key"
    call_command("rdns_server", "--write-only")
    config = (tmp_path / "pdns" / "pdns.conf").read_text().splitlines()
    assert {"api-key=the-key", "local-address=127.0.0.1", "webserver-address=127.0.0.1"} <= set(config)
    assert "webserver-port=18181" in config and "security-poll-suffix=" in config  # nothing leaves the host
    assert oct((tmp_path / "pdns" / "pdns.conf").stat().st_mode & 0o777) == "0o600"
    assert (tmp_path / "pdns" / "pdns.sqlite3").exists()
    settings.KVMPANEL_PDNS_URL = "http://dns.example.net:8081"
    with pytest.raises(CommandError):
        call_command("rdns_server", "--write-only")


def test_staff_see_each_addresss_ptr_and_whether_dns_has_it(
    client, bridged_node, alice, committing, settings
):
    make_pool(bridged_node)
    _vm, address = vm_with_address(alice, bridged_node, committing)
    Address.objects.filter(pk=address.pk).update(
        ptr="mail.example.com.", ptr_error="PowerDNS is not answering"
    )
    client.force_login(make_user("operator", is_staff=True, is_superuser=True))
    page = client.get("/backoffice/network/address/").content.decode()
    assert "mail.example.com. · waiting for DNS" in page
