"""Address pools: what is given out, in what order, what never is, the cool-down, and the race."""

import ipaddress
import re
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from network import allocation
from network.choices import AddressStatus
from network.models import Address, Pool
from vms import actions
from vms.models import NetworkInterface, VirtualMachine

from .factories import make_image, make_node, make_plan, make_user, make_vm, run_together

PASSWORD = "correct-horse-battery-9"


def make_pool(node=None, **fields) -> Pool:
    defaults = {
        "name": f"pool-{fields.get('prefix', 'v4')}",
        "prefix": "198.51.100.0/29",
        "gateway": "198.51.100.1",
    }
    pool = Pool(**{**defaults, **fields})
    pool.full_clean()
    pool.save()
    if node is not None:
        pool.nodes.add(node)
    return pool


def make_nic(node, **fields) -> NetworkInterface:
    vm = make_vm(make_user(f"owner-{NetworkInterface.objects.count()}"), node=node, **fields)
    return NetworkInterface.objects.create(vm=vm)


def take(node, family=4, **kwargs) -> Address:
    with transaction.atomic():
        return allocation.allocate(node, make_nic(node), family, **kwargs)


@pytest.fixture
def node(db):
    return make_node(network_mode="bridged", bridge="br0")


def test_an_ipv4_pool_never_gives_its_network_gateway_or_broadcast_address(node):
    pool = make_pool(node)  # 198.51.100.0/29: .1 is the gateway, .7 the broadcast address
    assert pool.capacity == 5
    given = [take(node).address for _ in range(5)]
    assert given == [f"198.51.100.{n}" for n in (2, 3, 4, 5, 6)]
    with pytest.raises(allocation.PoolExhausted, match="No IPv4 address is free"):
        take(node)


def test_the_usable_range_limits_what_is_given(node):
    pool = make_pool(
        node, prefix="198.51.100.0/24", first_address="198.51.100.10", last_address="198.51.100.11"
    )
    assert pool.capacity == 2
    assert [take(node).address for _ in range(2)] == ["198.51.100.10", "198.51.100.11"]
    with pytest.raises(allocation.PoolExhausted):
        take(node)


def test_reserved_addresses_are_never_given_out(node):
    pool = make_pool(node)
    Address.objects.create(pool=pool, address="198.51.100.2", prefix_length=32, status=AddressStatus.RESERVED)
    assert take(node).address == "198.51.100.3"


def test_a_released_address_cools_down_before_anyone_else_gets_it(node, settings):
    settings.KVMPANEL_ADDRESS_COOLDOWN_HOURS = 24
    make_pool(node, prefix="198.51.100.0/30", gateway=None)  # hosts .1 and .2
    first = take(node)
    assert first.address == "198.51.100.1"
    allocation.release(Address.objects.filter(pk=first.pk))
    first.refresh_from_db()
    assert first.status == AddressStatus.COOLING and first.assigned_object_id is None
    assert timedelta(hours=23) < first.cooling_until - timezone.now() <= timedelta(hours=24)
    assert take(node).address == "198.51.100.2"  # not the one cooling down
    with pytest.raises(allocation.PoolExhausted):
        take(node)
    Address.objects.filter(pk=first.pk).update(cooling_until=timezone.now() - timedelta(seconds=1))
    again = take(node)
    assert again.pk == first.pk and again.status == AddressStatus.ALLOCATED  # the same row, its history kept


def test_ipv6_pools_give_each_vm_its_own_64_and_never_the_gateways(node):
    pool = make_pool(node, name="v6", prefix="2001:db8:100::/48", gateway="2001:db8:100::1")
    assert pool.capacity == 2**16 - 1
    first, second = take(node, 6), take(node, 6)
    assert (first.cidr, second.cidr) == ("2001:db8:100:1::/64", "2001:db8:100:2::/64")
    assert first.is_network and first.host_address == "2001:db8:100:1::1"


def test_ipv6_pools_can_give_single_addresses(node):
    pool = make_pool(
        node, name="v6", prefix="2001:db8:100::/64", gateway="2001:db8:100::1", assign_prefix_length=128
    )
    assert pool.capacity == 2**62  # as good as endless
    assert take(node, 6).cidr == "2001:db8:100::2/128"  # never the subnet-router anycast ::0, nor the gateway


def test_a_node_only_gets_addresses_from_pools_it_carries(node):
    make_pool(make_node(), prefix="203.0.113.0/24", gateway="203.0.113.1")
    with pytest.raises(allocation.NoPool, match="No IPv4 address pool serves node"):
        take(node)


def test_a_pool_checks_its_own_settings(db):
    with pytest.raises(ValidationError, match=r"not in 198\.51\.100\.0/24"):
        Pool(name="x", prefix="198.51.100.0/24", gateway="203.0.113.1").full_clean()
    with pytest.raises(ValidationError, match="Not a subnet"):
        Pool(name="x", prefix="198.51.100.1/24").full_clean()
    with pytest.raises(ValidationError, match="a /64"):
        Pool(name="x", prefix="2001:db8::/48", assign_prefix_length=56).full_clean()
    with pytest.raises(ValidationError, match="not an IP address"):
        Pool(name="x", prefix="198.51.100.0/24", resolvers="198.51.100.53, dns.example").full_clean()


# Creates ----------------------------------------------------------------------------------------


def test_a_create_gets_a_nic_with_a_local_mac_and_the_plans_addresses(node, enqueued):
    make_pool(node)
    make_pool(node, name="v6", prefix="2001:db8:100::/48", gateway="2001:db8:100::1")
    owner, plan = make_user("alice"), make_plan()
    vm = actions.create_vm(
        owner=owner, plan=plan, image=make_image(on=[node]), hostname="web", password=PASSWORD
    )
    nic = vm.interfaces.get()
    first_octet = int(nic.mac.split(":")[0], 16)
    assert first_octet & 0b10 and not first_octet & 0b1  # locally administered, unicast
    assert [a.cidr for a in vm.addresses()] == ["198.51.100.2/32", "2001:db8:100:1::/64"]
    from accounts.models import AuditEntry

    assert AuditEntry.objects.filter(action="address.allocate", detail__contains="198.51.100.2/32").exists()


def test_an_exhausted_pool_refuses_the_create_and_nothing_is_made(node, enqueued):
    make_pool(node, prefix="198.51.100.0/30", gateway="198.51.100.1")  # one address: .2
    owner, plan, image = make_user("alice"), make_plan(ipv6_networks=0), make_image(on=[node])
    actions.create_vm(owner=owner, plan=plan, image=image, hostname="one", password=PASSWORD)
    with pytest.raises(actions.ActionRefused, match="No IPv4 address is free on node"):
        actions.create_vm(owner=owner, plan=plan, image=image, hostname="two", password=PASSWORD)
    assert list(VirtualMachine.objects.values_list("hostname", flat=True)) == ["one"]
    assert NetworkInterface.objects.count() == 1


def test_vms_on_isolated_nodes_get_no_addresses(db, enqueued):
    node = make_node()  # isolated: the panel's own network, as before public networking
    vm = actions.create_vm(
        owner=make_user("alice"),
        plan=make_plan(),
        image=make_image(on=[node]),
        hostname="x",
        password=PASSWORD,
    )
    assert not vm.interfaces.exists() and not vm.addresses().exists()


@pytest.mark.django_db(transaction=True)
def test_twenty_parallel_creates_get_twenty_distinct_addresses(enqueued):
    """Run on SQLite and on PostgreSQL (scripts/test.sh): the pool's row is locked while one is picked."""
    node = make_node(network_mode="bridged", bridge="br0")
    make_pool(node, prefix="198.51.100.0/24", gateway="198.51.100.1")
    make_pool(node, name="v6", prefix="2001:db8:100::/48", gateway="2001:db8:100::1")
    plan, image = make_plan(), make_image(on=[node])
    owners = [make_user(f"racer-{n}") for n in range(20)]

    def create(n: int) -> str:
        actions.create_vm(owner=owners[n], plan=plan, image=image, hostname=f"race-{n}", password=PASSWORD)
        return "created"

    outcomes = run_together(20, create)
    assert outcomes == ["created"] * 20, outcomes
    v4 = [a.address for a in Address.objects.filter(pool__family=4)]
    v6 = [a.address for a in Address.objects.filter(pool__family=6)]
    assert len(v4) == len(set(v4)) == 20 and len(v6) == len(set(v6)) == 20
    assert {ipaddress.ip_address(a) for a in v4} == {
        ipaddress.ip_address(f"198.51.100.{n}") for n in range(2, 22)
    }
    assert VirtualMachine.objects.count() == 20


# Delete and staff changes ----------------------------------------------------------------------


def test_staff_add_and_remove_addresses_and_each_change_is_an_operation(node, enqueued):
    make_pool(node, prefix="198.51.100.0/28")
    staff = make_user("root", is_staff=True)
    vm = make_vm(make_user("alice"), node=node, state="stopped")  # made before NICs existed: none yet
    operation = actions.add_address(vm, staff, 4)
    assert operation.kind == "change_addresses" and operation.status == "queued"
    added = vm.addresses().get()
    assert vm.interfaces.count() == 1 and added.address == "198.51.100.2"
    operation.status = "succeeded"
    operation.save()
    actions.remove_address(vm, staff, added)
    added.refresh_from_db()
    assert added.status == AddressStatus.COOLING and not vm.addresses().exists()
    from accounts.models import AuditEntry

    assert AuditEntry.objects.filter(action="address.allocate", actor=staff).exists()
    assert AuditEntry.objects.filter(action="address.release", actor=staff).exists()


def test_a_refused_staff_change_keeps_no_address(node, enqueued):
    make_pool(node)
    staff = make_user("root", is_staff=True)
    vm = make_vm(make_user("alice"), node=node)
    actions.add_address(vm, staff, 4)  # its operation is still queued
    with pytest.raises(actions.ActionRefused, match="still in progress"):
        actions.add_address(vm, staff, 4)
    assert vm.addresses().count() == 1


def test_a_routed_node_takes_ipv6_as_networks_only(db):
    routed = make_node(network_mode="routed")
    make_pool(routed, name="v6", prefix="2001:db8:100::/64", gateway=None, assign_prefix_length=128)
    with pytest.raises(allocation.NoPool, match="No IPv6 address pool serves node"):
        take(routed, 6)
    make_pool(routed, name="v6-nets", prefix="2001:db8:200::/48", gateway=None)
    assert take(routed, 6).cidr == "2001:db8:200::/64"


# The backoffice ----------------------------------------------------------------------------------


def test_staff_add_and_take_back_addresses_from_the_vms_backoffice_page(client, node, enqueued):
    make_pool(node, prefix="198.51.100.0/28")
    staff = make_user("root", is_staff=True, is_superuser=True)
    vm = make_vm(make_user("alice"), node=node, state="stopped")
    client.force_login(staff)
    page = f"/backoffice/vms/virtualmachine/{vm.pk}/change/"
    html = client.get(page).content.decode()
    assert 'form="add-v4"' in html and html.index('id="add-v4"') > html.index("</form>")  # not nested
    response = client.post(f"/backoffice/vms/virtualmachine/{vm.pk}/addresses/add/", {"family": "4"})
    assert response.status_code == 302 and response.url == page
    address = vm.addresses().get()
    assert "198.51.100.2/32" in client.get(page).content.decode()
    vm.operations.update(status="succeeded")
    client.post(f"/backoffice/vms/virtualmachine/{vm.pk}/addresses/{address.pk}/remove/")
    assert not vm.addresses().exists() and vm.operations.count() == 2
    assert client.get(f"/backoffice/vms/virtualmachine/{vm.pk}/addresses/add/").status_code == 405


def test_the_pool_list_counts_usage_in_the_database(client, node, django_assert_max_num_queries):
    pool = make_pool(node, prefix="198.51.100.0/28")  # 13 usable (gateway .1 kept back)
    take(node)
    Address.objects.create(pool=pool, address="198.51.100.9", prefix_length=32, status=AddressStatus.RESERVED)
    cooling = take(node)
    allocation.release(Address.objects.filter(pk=cooling.pk))
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    with django_assert_max_num_queries(12):
        html = client.get("/backoffice/network/pool/").content.decode()
    cells = dict(re.findall(r'<td class="field-(\w+)">(?:<a [^>]*>)?([^<]*)', html))
    counts = {column: cells[column] for column in ("size", "used", "reserved", "cooling", "free")}
    assert counts == {"size": "13", "used": "1", "reserved": "1", "cooling": "1", "free": "10"}


def test_the_vm_list_finds_a_vm_by_its_address_for_its_owner_and_for_staff(client, node, staff):
    """The abuse desk's first question: whose is this address? A whole IPv6 address finds its /64."""
    v6 = make_pool(node, name="v6", prefix="2001:db8:7::/48", gateway="fe80::1", assign_prefix_length=64)
    make_pool(node, prefix="198.51.100.0/29")
    nic = make_nic(node, hostname="mail")
    with transaction.atomic():
        v4_address = allocation.allocate(node, nic, 4)
        v6_network = allocation.allocate(node, nic, 6, pool=v6)
    other = take(node)  # another customer's VM on the same pool
    inside_the_64 = str(ipaddress.ip_network(v6_network.cidr)[0x1234])

    def listed(user, text):
        client.force_login(user)
        html = client.get(reverse("vms:list"), {"q": text}).content.decode()
        return re.findall(r'<tr data-vm="[^"]+">\s*<td><a [^>]*>([^<]+)</a>', html)

    owner = nic.vm.owner
    assert listed(owner, v4_address.address) == ["mail"]
    assert listed(owner, inside_the_64) == ["mail"]
    assert listed(owner, "2001:db8:7") == ["mail"]  # the beginning of an address; listed once
    assert listed(owner, other.address) == []  # never another customer's VM
    assert listed(staff, other.address) == [other.assigned_object.vm.hostname]
    assert listed(staff, inside_the_64) == ["mail"]
