"""Domain XML is built with lxml: hostile names stay text and the XML stays well-formed."""

import pytest
from lxml import etree

from hypervisor import xml

from .test_hypervisor import spec

HOSTILE = [
    "</title><devices><disk type='file'><source file='/etc/shadow'/></disk></devices>",
    'x" onload="alert(1)',
    "&xxe; <!ENTITY xxe SYSTEM 'file:///etc/passwd'>",
    "]]><![CDATA[",
    "$(reboot); `id` | rm -rf /",
    "名前 — ünïcödé",
]


@pytest.mark.parametrize("title", HOSTILE)
def test_a_hostile_title_stays_text(title):
    document = etree.fromstring(xml.domain_xml(spec(title=title, hostname=title)).encode())
    assert document.findtext("title") == title
    assert len(document.findall("devices/disk[@device='disk']")) == 1  # no disk smuggled in
    assert document.find("devices/disk/source").get("volume") == "disk.qcow2"
    assert iso_drive_of(document).find("source") is None  # the empty CD drive
    marker = document.find(f"metadata/{{{xml.PANEL_NS}}}vm")
    assert marker.get("hostname") == title


def test_the_domain_carries_what_the_panel_needs():
    document = etree.fromstring(xml.domain_xml(spec()).encode())
    assert document.get("type") == "qemu"
    assert document.find("cpu") is None  # emulation boots without a <cpu> element
    assert document.findtext("name") == spec().name
    assert document.findtext("uuid") == spec().uuid
    graphics = document.find("devices/graphics")
    assert (graphics.get("type"), graphics.get("listen"), graphics.get("passwd")) == (
        "vnc",
        "127.0.0.1",
        "s3cretpw",
    )
    assert document.find("devices/disk/target").get("bus") == "virtio"
    assert document.find("devices/interface/model").get("type") == "virtio"
    assert document.find("devices/interface/source").get("network") == "test-net"
    assert document.find("devices/serial/log").get("file").endswith(f"{spec().name}-serial.log")
    assert document.find("devices/channel/target").get("name") == "org.qemu.guest_agent.0"
    assert xml.is_panel_domain(xml.domain_xml(spec()))


def test_kvm_domains_get_the_host_cpu_model():
    document = etree.fromstring(xml.domain_xml(spec(virt_type="kvm")).encode())
    assert document.get("type") == "kvm"
    assert document.find("cpu").get("mode") == "host-model"


def test_reading_xml_does_not_expand_entities():
    hostile = (
        '<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/hostname">]>'
        "<domain><title>&x;</title></domain>"
    )
    assert xml.domain_title(hostile) == ""


def iso_drive_of(document):
    return next(disk for disk in document.iter("disk") if disk.find("target").get("dev") == xml.ISO_DRIVE)


def test_the_iso_drive_is_always_there_and_can_boot_first():
    empty = etree.fromstring(xml.domain_xml(spec()).encode())
    drive = iso_drive_of(empty)
    assert drive.get("device") == "cdrom" and drive.find("source") is None
    assert empty.find("devices/disk[@device='disk']/boot").get("order") == "1"
    assert empty.find("os/boot") is None  # boot order is per device

    booting = etree.fromstring(xml.domain_xml(spec(iso_volume="rescue.iso", boot_from_iso=True)).encode())
    drive = iso_drive_of(booting)
    assert (drive.find("source").get("volume"), drive.find("boot").get("order")) == ("rescue.iso", "1")
    assert booting.find("devices/disk[@device='disk']/boot").get("order") == "2"
