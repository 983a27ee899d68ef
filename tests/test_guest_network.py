"""What the node and the guest are told about a VM's network: the seed's network-config, the domain's
NICs, and the VM's traffic filter."""

import pytest
import yaml
from lxml import etree

from hypervisor import nwfilter
from hypervisor import xml as domain_xml
from network.models import Pool
from vms import cloudinit, networking
from vms.models import NetworkInterface
from vms.tasks import domain_spec

from .factories import make_node, make_user, make_vm
from .test_cloudinit import make_spec, seed_files


def make_pools(node, v4="198.51.100.0/25", v6="2001:db8:15::/64", assign=128):
    four = Pool.objects.create(
        name="v4", prefix=v4, gateway="198.51.100.1", resolvers="198.51.100.53, 2001:db8:15::53"
    )
    six = Pool.objects.create(name="v6", prefix=v6, gateway="2001:db8:15::1", assign_prefix_length=assign)
    for pool in (four, six):
        pool.nodes.add(node)


def vm_with_addresses(node, ipv6_prefix_length=128):
    from network import allocation

    vm = make_vm(make_user("alice"), node=node, hostname="web")
    nic = NetworkInterface.objects.create(vm=vm)
    allocation.allocate(node, nic, 4)
    allocation.allocate(node, nic, 6)
    return vm, nic


@pytest.fixture
def bridged(db):
    node = make_node(network_mode="bridged", bridge="br0")
    make_pools(node)
    return vm_with_addresses(node)


@pytest.fixture
def routed(db):
    node = make_node(network_mode="routed")
    make_pools(node, v4="198.51.100.128/25", v6="2001:db8:16::/48", assign=64)
    Pool.objects.filter(name="v4").update(gateway=None)
    Pool.objects.filter(name="v6").update(gateway=None)
    return vm_with_addresses(node)


def test_a_bridged_guest_gets_static_addresses_on_the_pools_subnets_matched_by_mac(bridged):
    vm, nic = bridged
    assert networking.network_config(vm) == {
        "version": 2,
        "ethernets": {
            "eth0": {
                "match": {"macaddress": nic.mac},
                "set-name": "eth0",
                "addresses": ["198.51.100.2/25", "2001:db8:15::2/64"],
                "gateway4": "198.51.100.1",
                "gateway6": "2001:db8:15::1",
                "nameservers": {"addresses": ["198.51.100.53", "2001:db8:15::53"]},
            }
        },
    }


def test_a_routed_guest_gets_its_own_addresses_and_the_gateways_the_host_answers_for(routed):
    vm, _nic = routed
    ethernet = networking.network_config(vm)["ethernets"]["eth0"]
    assert ethernet["addresses"] == ["198.51.100.129/32", "2001:db8:16::1/64"]
    assert (ethernet["gateway4"], ethernet["gateway6"]) == ("169.254.0.1", "fe80::1")


def test_the_seed_carries_the_network_config_and_applies_it_at_every_boot(bridged):
    vm, nic = bridged
    files = seed_files(make_spec(network_config=networking.network_config(vm)))
    network = yaml.safe_load(files["network-config"])
    assert network["ethernets"]["eth0"]["match"]["macaddress"] == nic.mac
    assert "dhcp4" not in network["ethernets"]["eth0"]  # static: nothing waits for a DHCP answer
    user_data = yaml.safe_load(files["user-data"].split("\n", 1)[1])
    assert user_data["updates"] == {"network": {"when": ["boot-new-instance", "boot"]}}


def test_a_vm_without_nics_on_an_isolated_node_gets_no_network_and_waits_for_no_dhcp(db):
    vm = make_vm(make_user("alice"), node=make_node(network_mode="isolated"))
    assert networking.network_config(vm) == {"config": "disabled"}
    files = seed_files(make_spec(network_config=networking.network_config(vm)))
    assert yaml.safe_load(files["network-config"]) == {"config": "disabled"}


def test_a_vm_without_nics_elsewhere_keeps_cloud_inits_dhcp_fallback(db):
    vm = make_vm(make_user("alice"), node=make_node(network_mode="bridged", bridge="br0"))
    assert networking.network_config(vm) is None
    assert cloudinit.FALLBACK_NETWORK_CONFIG in seed_files(make_spec())["network-config"]
    interface = etree.fromstring(domain_xml.domain_xml(domain_spec(vm))).find("devices/interface")
    assert (
        interface.get("type") == "network" and interface.find("source").get("network") == vm.node.network_name
    )


def test_a_bridged_nic_joins_the_hosts_bridge_with_its_mac_and_the_vms_filter(bridged):
    vm, nic = bridged
    interface = etree.fromstring(domain_xml.domain_xml(domain_spec(vm))).find("devices/interface")
    assert interface.get("type") == "bridge"
    assert interface.find("source").get("bridge") == "br0"
    assert interface.find("mac").get("address") == nic.mac
    assert interface.find("filterref").get("filter") == f"test-kvmpanel-{vm.uuid}"


def test_a_routed_nic_is_a_tap_whose_host_side_answers_for_the_gateways_and_routes_the_addresses(routed):
    vm, _nic = routed
    interface = etree.fromstring(domain_xml.domain_xml(domain_spec(vm))).find("devices/interface")
    assert interface.get("type") == "ethernet"
    ips = [
        (ip.get("family"), ip.get("address"), ip.get("prefix"), ip.get("peer"))
        for ip in interface.iterfind("source/ip")
    ]
    assert ips == [
        ("ipv4", "169.254.0.1", "32", "198.51.100.129"),  # a host route to the guest's address
        ("ipv6", "fe80::1", "64", None),  # the guest's IPv6 gateway
        ("ipv6", "2001:db8:16::", "64", None),  # its prefix route sends the VM's /64 to the tap
    ]


def filter_rules(vm):
    document = etree.fromstring(nwfilter.filter_xml(networking.filter_spec(vm)).encode())
    return [
        (rule.get("action"), rule.get("direction"), child.tag, dict(child.attrib))
        for rule in document.iterfind("rule")
        for child in rule
    ]


def test_the_filter_lets_the_guest_speak_only_for_its_own_mac_and_addresses(bridged):
    vm, _nic = bridged
    rules = filter_rules(vm)
    assert rules[0] == ("drop", "out", "mac", {"match": "no", "srcmacaddr": "$MAC"})
    assert ("return", "out", "ip", {"srcipaddr": "198.51.100.2"}) in rules
    assert ("return", "out", "arp", {"arpsrcipaddr": "198.51.100.2"}) in rules
    assert ("return", "out", "ipv6", {"srcipaddr": "2001:db8:15::2", "srcipmask": "128"}) in rules
    for protocol in ("arp", "ip", "ipv6"):
        assert ("drop", "out", protocol, {}) in rules  # anything else of theirs


def test_the_filter_drops_router_advertisements_and_dhcp_servers_from_the_guest(bridged):
    rules = filter_rules(bridged[0])
    assert ("drop", "out", "ipv6", {"protocol": "icmpv6", "type": "134"}) in rules
    assert ("drop", "out", "ip", {"protocol": "udp", "srcportstart": "67", "srcportend": "67"}) in rules
    assert ("drop", "out", "ipv6", {"protocol": "udp", "srcportstart": "547", "srcportend": "547"}) in rules


def test_the_filter_delivers_to_the_guest_only_what_is_addressed_to_it(bridged):
    rules = filter_rules(bridged[0])
    assert ("return", "in", "ip", {"dstipaddr": "198.51.100.2"}) in rules
    assert ("return", "in", "ipv6", {"dstipaddr": "ff00::", "dstipmask": "8"}) in rules
    assert ("drop", "in", "ip", {}) in rules and ("drop", "in", "ipv6", {}) in rules


def test_hostile_values_cannot_add_rules(db):
    from hypervisor import FilterSpec

    spec = FilterSpec(name="x'/><rule action='accept'", ipv4=("198.51.100.2",))
    document = etree.fromstring(nwfilter.filter_xml(spec).encode())
    assert document.get("name") == "x'/><rule action='accept'"
    assert all(rule.get("action") in ("drop", "return") for rule in document.iterfind("rule"))


def test_an_updated_filter_keeps_its_uuid(db):
    from hypervisor import FilterSpec

    document = etree.fromstring(
        nwfilter.filter_xml(FilterSpec(name="f"), uuid="1b93f65b-5a78-4342-8371-b6faefc04bdc")
    )
    assert document.findtext("uuid") == "1b93f65b-5a78-4342-8371-b6faefc04bdc"
