"""A node's network mode is checked when it is registered or refreshed; the host is only read."""

import pytest

import hypervisor
from nodes.choices import NetworkMode
from nodes.registration import network_problem
from vms import actions

from .factories import make_image, make_node, make_plan, make_user

INFO = hypervisor.NodeInfo(
    hostname="h", cpus=2, memory_mib=4096, cpu_model="x86_64", libvirt_version="9.0.0",
    hypervisor_version="7.2.0", domain_types=("qemu",),
)  # fmt: skip


class Host:
    """The node's side as the hypervisor door reports it (the door itself is tested against libvirt)."""

    def __init__(self, interfaces=None, filters=True):
        self.interfaces = interfaces or {}
        self.filters = filters

    def host_interface_type(self, name):
        return self.interfaces.get(name)

    def filter_names(self):
        if not self.filters:
            raise hypervisor.OperationFailed("this function is not supported by the connection driver")
        return ["clean-traffic"]


def test_bridged_mode_needs_an_existing_bridge_and_says_what_is_wrong():
    assert "needs the name of an existing bridge" in network_problem(Host(), INFO, NetworkMode.BRIDGED, "")
    missing = network_problem(Host(), INFO, NetworkMode.BRIDGED, "br0")
    assert "no interface named br0" in missing and "never changes the host's network" in missing
    not_a_bridge = network_problem(Host({"eth0": "ethernet"}), INFO, NetworkMode.BRIDGED, "eth0")
    assert "eth0 on the host is an interface of type ethernet, not a bridge" in not_a_bridge
    assert network_problem(Host({"br0": "bridge"}), INFO, NetworkMode.BRIDGED, "br0") == ""


def test_routed_mode_needs_a_recent_libvirt_with_traffic_filters():
    assert network_problem(Host(), INFO, NetworkMode.ROUTED, "") == ""
    old = hypervisor.NodeInfo(**{**INFO.__dict__, "libvirt_version": "7.0.0"})
    assert "needs libvirt 9.0.0 or newer" in network_problem(Host(), old, NetworkMode.ROUTED, "")
    assert "no traffic filter (nwfilter) driver" in network_problem(
        Host(filters=False), INFO, NetworkMode.ROUTED, ""
    )


def test_isolated_mode_needs_nothing_of_the_host():
    assert network_problem(Host(), INFO, NetworkMode.ISOLATED, "") == ""


def test_no_vm_is_placed_on_a_node_with_a_network_problem(db):
    node = make_node(
        network_mode="bridged", bridge="br9", network_problem="The host has no interface named br9."
    )
    with pytest.raises(actions.ActionRefused, match="No hypervisor node is available"):
        actions.create_vm(
            owner=make_user("alice"),
            plan=make_plan(),
            image=make_image(on=[node]),
            hostname="x",
            password="x" * 12,
        )
