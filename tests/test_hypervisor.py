"""The hypervisor door against libvirt's test driver."""

import pytest
from lxml import etree

import hypervisor
from hypervisor import xml


def spec(**overrides) -> hypervisor.DomainSpec:
    fields = {
        "name": "test-6f1c6c2e-4c9b-4a3e-9a4e-0c1d2e3f4a5b",
        "uuid": "6f1c6c2e-4c9b-4a3e-9a4e-0c1d2e3f4a5b",
        "title": "web",
        "virt_type": "qemu",
        "vcpus": 1,
        "memory_mib": 512,
        "pool": "test-pool",
        "disk_volume": "disk.qcow2",
        "network": "test-net",
        "vnc_password": "s3cretpw",
        "hostname": "web",
    }
    return hypervisor.DomainSpec(**{**fields, **overrides})


@pytest.fixture
def image_volume(test_session):
    test_session._conn.storagePoolLookupByName("test-pool").createXML(
        xml.volume_xml("image.qcow2", 2 * 1024**3, "qcow2"), 0
    )
    return "image.qcow2"


def test_it_reports_node_facts(test_session):
    info = test_session.node_info()
    assert (info.cpus, info.memory_mib) == (4, 8192)


def test_it_creates_an_overlay_grown_to_the_requested_size(test_session, image_volume):
    path = test_session.create_overlay("test-pool", "disk.qcow2", "test-pool", image_volume, 4 * 1024**3)
    assert path.endswith("/disk.qcow2")
    assert test_session.volume_names("test-pool") == ["disk.qcow2", "image.qcow2"]


def test_it_runs_a_domain_through_its_life(test_session, image_volume):
    test_session.create_overlay("test-pool", "disk.qcow2", "test-pool", image_volume, 4 * 1024**3)
    test_session.define_domain(spec())
    name = spec().name
    assert test_session.power_state(name) == hypervisor.PowerState.STOPPED
    test_session.start(name)
    test_session.start(name)  # starting a running domain changes nothing
    assert test_session.power_state(name) == hypervisor.PowerState.RUNNING
    test_session.reboot(name)
    test_session.shutdown(name, timeout=5)
    assert test_session.power_state(name) == hypervisor.PowerState.STOPPED
    assert test_session.undefine(name) == [("test-pool", "disk.qcow2")]
    assert not test_session.domain_exists(name)


def test_it_turns_missing_objects_into_not_found(test_session):
    with pytest.raises(hypervisor.NotFound):
        test_session.start("test-nothing-here")
    with pytest.raises(hypervisor.NotFound):
        test_session.volume_path("test-pool", "nothing.qcow2")
    assert test_session.delete_volume("test-pool", "nothing.qcow2") is False


def test_it_refuses_to_reboot_a_stopped_domain(test_session, image_volume):
    test_session.define_domain(spec())
    with pytest.raises(hypervisor.Conflict):
        test_session.reboot(spec().name)


def test_it_never_touches_a_domain_without_panel_metadata(test_session):
    foreign = etree.fromstring(xml.domain_xml(spec(name="test-foreign")).encode())
    foreign.remove(foreign.find("metadata"))
    test_session._conn.defineXML(etree.tostring(foreign).decode())
    for verb in (test_session.start, test_session.destroy, test_session.undefine):
        with pytest.raises(hypervisor.NotOurs):
            verb("test-foreign")
    with pytest.raises(hypervisor.NotOurs):
        test_session.define_domain(spec(name="test-foreign"))
    assert "test-foreign" in test_session.domain_names()


def test_an_unreachable_node_raises_node_unreachable():
    with (
        pytest.raises(hypervisor.NodeUnreachable),
        hypervisor.connect("qemu+unix:///system?socket=/nonexistent"),
    ):
        pass


@pytest.mark.parametrize(
    "override, domain_types, expected",
    [
        ("kvm", ("qemu",), "kvm"),
        ("qemu", ("kvm", "qemu"), "qemu"),
        ("auto", ("qemu",), "qemu"),
        ("auto", ("kvm", "qemu"), "kvm"),
    ],
)
def test_it_picks_the_virtualization_type(override, domain_types, expected):
    info = hypervisor.NodeInfo("h", 1, 1024, "x", "9.0.0", "7.2.0", domain_types)
    assert hypervisor.detect_virt_type(info, override, local=False) == expected
