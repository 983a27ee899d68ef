"""libvirt XML, built and read with lxml: never with string formatting.

Values from users (titles, hostnames) only ever become text or attribute
values, so they cannot add elements.
"""

import ipaddress

from lxml import etree
from lxml.builder import E

from .specs import Bandwidth, DomainSpec, NicSpec

PANEL_NS = "https://kvmpanel.dev/xmlns/vm/1"
PANEL_PREFIX = "kvmpanel"
GUEST_AGENT_CHANNEL = "org.qemu.guest_agent.0"
# The seed is the first CD-ROM (hdc); customers' ISOs go in the second.
ISO_DRIVE = "hdd"


def _to_string(element: etree._Element) -> str:
    return etree.tostring(element, encoding="unicode", pretty_print=True)


def serial_log_path(domain_name: str) -> str:
    """Where libvirt writes the VM's serial output on its node (virtlogd owns it)."""
    return f"/var/log/libvirt/qemu/{domain_name}-serial.log"


def _panel_metadata(spec: DomainSpec) -> etree._Element:
    marker = etree.Element(f"{{{PANEL_NS}}}vm", nsmap={PANEL_PREFIX: PANEL_NS})
    marker.set("hostname", spec.hostname)
    if spec.owner_id is not None:
        marker.set("owner", str(spec.owner_id))
    return E.metadata(marker)


def _disks(spec: DomainSpec) -> list[etree._Element]:
    """The VM's disk first; in rescue mode the rescue system first and the VM's disk second."""
    first_boot = "2" if spec.boot_from_iso else "1"
    if spec.rescue_volume:
        return [_disk(spec, spec.rescue_volume, "vda", first_boot), _disk(spec, spec.disk_volume, "vdb")]
    return [_disk(spec, spec.disk_volume, "vda", first_boot)]


def _disk(spec: DomainSpec, volume: str, target: str, boot_order: str | None = None) -> etree._Element:
    disk = E.disk(
        E.driver(name="qemu", type=spec.disk_format, discard="unmap"),
        E.source(pool=spec.pool, volume=volume),
        E.target(dev=target, bus="virtio"),
        type="volume",
        device="disk",
    )
    if boot_order:
        disk.append(E.boot(order=boot_order))
    return disk


def iso_drive(pool: str, volume: str | None, boot_first: bool = False) -> etree._Element:
    """The drive for the customer's ISOs: always there, so media can change while the VM runs."""
    drive = E.disk(E.driver(name="qemu", type="raw"), E.target(dev=ISO_DRIVE, bus="ide"), E.readonly())
    if volume:
        drive.insert(1, E.source(pool=pool, volume=volume))
    if boot_first:
        drive.append(E.boot(order="1"))
    drive.set("type", "volume")
    drive.set("device", "cdrom")
    return drive


def iso_drive_xml(pool: str, volume: str | None) -> str:
    """The ISO drive with new media (or none: ejected), for a change while the domain runs."""
    return _to_string(iso_drive(pool, volume))


def _cdrom(pool: str, volume: str, index: int) -> etree._Element:
    # IDE on machine type "pc": the Debian cloud kernel has no AHCI driver.
    return E.disk(
        E.driver(name="qemu", type="raw"),
        E.source(pool=pool, volume=volume),
        E.target(dev=f"hd{chr(ord('c') + index)}", bus="ide"),
        E.readonly(),
        type="volume",
        device="cdrom",
    )


def _graphics(spec: DomainSpec) -> etree._Element:
    return E.graphics(
        E.listen(type="address", address=spec.vnc_listen),
        type="vnc",
        port="-1",
        autoport="yes",
        listen=spec.vnc_listen,
        passwd=spec.vnc_password,
    )


def _interfaces(spec: DomainSpec) -> list[etree._Element]:
    if not spec.nics:  # a VM made before NICs were recorded: its one NIC on the panel's network
        element = E.interface(E.source(network=spec.network), E.model(type="virtio"), type="network")
        bandwidth = bandwidth_element(spec.bandwidth)
        if bandwidth is not None:
            element.append(bandwidth)
        return [element]
    return [interface(nic) for nic in spec.nics]


def bandwidth_element(bandwidth: Bandwidth) -> etree._Element | None:
    """libvirt's <bandwidth> for a NIC (kilobytes per second), or None when both ways are unlimited."""
    if not bandwidth.inbound_kbps and not bandwidth.outbound_kbps:
        return None
    element = E.bandwidth()
    if bandwidth.inbound_kbps:
        element.append(E.inbound(average=str(bandwidth.inbound_kbps)))
    if bandwidth.outbound_kbps:
        element.append(E.outbound(average=str(bandwidth.outbound_kbps)))
    return element


def interface_bandwidth(xml_text: str) -> dict[str, Bandwidth]:
    """Each NIC's configured <bandwidth> by MAC, from a domain definition (tests and checks)."""
    found = {}
    for nic in parse(xml_text).iterfind("devices/interface"):
        mac = nic.find("mac")
        inbound, outbound = nic.find("bandwidth/inbound"), nic.find("bandwidth/outbound")
        found[mac.get("address") if mac is not None else ""] = Bandwidth(
            inbound_kbps=int(inbound.get("average", 0)) if inbound is not None else 0,
            outbound_kbps=int(outbound.get("average", 0)) if outbound is not None else 0,
        )
    return found


def interface(nic: NicSpec) -> etree._Element:
    """One NIC: on a libvirt network, on a host bridge, or a routed tap of its own."""
    if nic.mode == "routed":
        element = E.interface(E.mac(address=nic.mac), _routed_host_side(nic), type="ethernet")
    elif nic.mode == "bridge":
        element = E.interface(E.mac(address=nic.mac), E.source(bridge=nic.source), type="bridge")
    else:
        element = E.interface(E.mac(address=nic.mac), E.source(network=nic.source), type="network")
    element.append(E.model(type="virtio"))
    if nic.filter_name:
        element.append(E.filterref(filter=nic.filter_name))
    bandwidth = bandwidth_element(nic.bandwidth)
    if bandwidth is not None:
        element.append(bandwidth)
    return element


def _routed_host_side(nic: NicSpec) -> etree._Element:
    """The host's side of a routed tap, which libvirt sets up when the domain starts (and removes):
    the gateway addresses the guest uses, a host route to each of the guest's IPv4 addresses (the
    gateway address with that address as its peer), and for each of its IPv6 networks an address of
    the host's in it (the network's first, its subnet-router anycast address), whose prefix route
    sends the whole /64 to the tap at once (a route through the guest's address would wait for
    duplicate address detection, and libvirt gives up)."""
    source = E.source()
    for address in nic.ipv4:
        source.append(E.ip(address=nic.gateway_v4, family="ipv4", prefix="32", peer=address))
    if nic.ipv6:
        source.append(E.ip(address=nic.gateway_v6, family="ipv6", prefix="64"))
    for cidr in nic.ipv6:
        network = ipaddress.ip_network(cidr, strict=False)
        source.append(
            E.ip(address=str(network.network_address), family="ipv6", prefix=str(network.prefixlen))
        )
    return source


def _devices(spec: DomainSpec) -> etree._Element:
    devices = E.devices(*_disks(spec))
    for index, volume in enumerate(spec.cdrom_volumes):
        devices.append(_cdrom(spec.pool, volume, index))
    devices.append(iso_drive(spec.pool, spec.iso_volume, boot_first=spec.boot_from_iso))
    devices.extend(
        [
            *_interfaces(spec),
            E.serial(
                E.log(file=serial_log_path(spec.name), append="off"),
                E.target(port="0"),
                type="pty",
            ),
            E.console(E.target(type="serial", port="0"), type="pty"),
            E.channel(E.target(type="virtio", name=GUEST_AGENT_CHANNEL), type="unix"),
            E.input(type="tablet", bus="usb"),
            _graphics(spec),
            E.video(E.model(type="vga")),
            # The balloon driver reports the guest's own memory use every 10 s (usage graphs).
            E.memballoon(E.stats(period="10"), model="virtio"),
            E.rng(E.backend("/dev/urandom", model="random"), model="virtio"),
        ]
    )
    return devices


def domain_xml(spec: DomainSpec) -> str:
    """The domain definition for one VM."""
    domain = E.domain(
        E.name(spec.name),
        E.uuid(spec.uuid),
        E.title(spec.title),
        _panel_metadata(spec),
        E.memory(str(spec.memory_mib), unit="MiB"),
        E.vcpu(str(spec.vcpus)),
        # Boot order is set per device (the disk, or the ISO drive first).
        E.os(E.type("hvm", arch="x86_64", machine=spec.machine)),
        E.features(E.acpi(), E.apic()),
        E.clock(offset="utc"),
        E.on_poweroff("destroy"),
        E.on_reboot("restart"),
        E.on_crash("destroy"),
        _devices(spec),
        type=spec.virt_type,
    )
    if spec.virt_type == "kvm":
        # On a real KVM host the guest sees the host's CPU model. Under
        # emulation (qemu/TCG) no <cpu> element is the combination that boots.
        domain.insert(domain.index(domain.find("features")) + 1, E.cpu(mode="host-model"))
    return _to_string(domain)


def pool_xml(name: str, path: str) -> str:
    return _to_string(E.pool(E.name(name), E.target(E.path(path)), type="dir"))


def host_interface_type(xml_text: str) -> str:
    """The kind of a host interface ("bridge", "ethernet"…) from the node's interface description."""
    return parse(xml_text).get("type", "")


def network_xml(name: str, bridge: str) -> str:
    """An isolated network: no <forward>, so guests reach only each other and the host bridge."""
    return _to_string(E.network(E.name(name), E.bridge(name=bridge, stp="on", delay="0")))


def volume_xml(name: str, capacity_bytes: int, fmt: str, backing: tuple[str, str] | None = None) -> str:
    """A volume; with `backing` (path, format) it is a copy-on-write overlay.

    A qcow2 volume is made version 3 (compat 1.1): libvirt 9.0 makes version 2 files unless told,
    and only version 3 holds the persistent bitmaps of backup checkpoints (and zero clusters).
    """
    target = E.target(E.format(type=fmt))
    if fmt == "qcow2":
        target.append(E.compat("1.1"))
    volume = E.volume(
        E.name(name),
        E.capacity(str(capacity_bytes), unit="bytes"),
        E.allocation("0", unit="bytes"),
        target,
    )
    if backing is not None:
        backing_path, backing_format = backing
        volume.append(E.backingStore(E.path(backing_path), E.format(type=backing_format)))
    return _to_string(volume)


def parse(xml: str) -> etree._Element:
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    return etree.fromstring(xml.encode(), parser)


def is_panel_domain(xml: str) -> bool:
    """True when the domain carries the panel's metadata marker."""
    return parse(xml).find(f"metadata/{{{PANEL_NS}}}vm") is not None


def domain_volumes(xml: str) -> list[tuple[str, str]]:
    """(pool, volume) of every pool-backed disk of a domain."""
    found = []
    for source in parse(xml).iterfind("devices/disk/source"):
        if source.get("pool") and source.get("volume"):
            found.append((source.get("pool"), source.get("volume")))
    return found


def domain_title(xml: str) -> str:
    return parse(xml).findtext("title") or ""


def snapshot_xml(name: str, description: str = "") -> str:
    """An internal snapshot of every disk (and, for a running domain, its memory)."""
    return _to_string(E.domainsnapshot(E.name(name), E.description(description)))


def push_backup_xml(disk_target: str, target_path: str, since: str = "") -> str:
    """A push-mode backup of one disk into a file on the node (libvirt writes it): full into a raw
    file, or (`since` a checkpoint) incremental into a qcow2 file holding only the blocks written since."""
    driver = "qcow2" if since else "raw"
    disk = E.disk(E.target(file=target_path), E.driver(type=driver), name=disk_target, type="file")
    children = [E.incremental(since)] if since else []
    return _to_string(E.domainbackup(*children, E.disks(disk), mode="push"))


def checkpoint_xml(name: str, disk_targets: list[str], tracked: str) -> str:
    """A checkpoint that tracks the writes to disk `tracked` from now on (a persistent bitmap in its
    qcow2 file); the domain's other disks (seed, ISO) are left out."""
    disks = [E.disk(name=t, checkpoint="bitmap" if t == tracked else "no") for t in disk_targets]
    return _to_string(E.domaincheckpoint(E.name(name), E.disks(*disks)))


def disk_targets(xml: str) -> list[str]:
    """The target names (vda, hdc, …) of the domain's disks that can hold a checkpoint (writable
    files and volumes; not CD-ROMs)."""
    return [
        disk.find("target").get("dev")
        for disk in parse(xml).iterfind("devices/disk")
        if disk.get("device", "disk") == "disk" and disk.find("target") is not None
    ]


def snapshot_info(xml: str) -> dict:
    """Name, creation time (epoch seconds), domain state and whether the memory was saved."""
    root = parse(xml)
    memory = root.find("memory")
    return {
        "name": root.findtext("name") or "",
        "created": int(root.findtext("creationTime") or 0),
        "state": root.findtext("state") or "",
        "memory": memory is not None and memory.get("snapshot") == "internal",
    }
