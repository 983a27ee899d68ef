"""Time from "Create" in the portal until SSH answers from a peer, next to the same guest booted by raw
libvirt with the same seed.

    .venv/bin/python bench/create_to_ready.py [--runs 1]

Both columns boot the demo guest under emulation on a bridge with no uplink (tests/netbed.py: only
documentation prefixes, peers in a namespace of the bench's own) with a static network-config in
its seed. The panel column goes through everything a customer's click does (the create view, the
Operation row, Redis, a real Celery worker, the hypervisor door, the traffic filter, the ready watch);
the raw columns make the same overlay, the same seed (same hostname, key and addresses) and start
the domain with libvirt directly, with the panel's traffic filter on the NIC and without. Each
time is split at the domain's start, so the panel's own part is visible however much the emulated
boot varies. "DHCP in journal" counts the lines of the guest's
journal of that boot that mention DHCP (0: nothing waited for a lease).
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import _setup
from _setup import IMAGE_VOLUME, NETWORK, NODE, POOL, URI, cleanup, prepare, start_worker, stop_process
from create_to_running import wait_for
from django.test import Client

import hypervisor
from network.models import Address, Pool
from nodes.registration import register_node
from vms import cloudinit, networking
from vms.models import VirtualMachine

sys.path.insert(0, str(_setup.ROOT))
from tests import netbed

TAG = "n15b"
V4, V6 = "198.51.100.10", "2001:db8:15::2"


BOOT_TIMEOUT = 900  # an emulated boot on a busy machine


def ssh_answers(peer, key: Path) -> float:
    """Wait until port 22 opens, then log in with the key; returns the time it answered."""
    wait_for(lambda: peer.port_open(V4), timeout=BOOT_TIMEOUT, poll=0.1)
    wait_for(lambda: peer.ssh(key, V4, "true").returncode == 0, timeout=120, poll=0.5)
    return time.time()


def dhcp_mentions(peer, key: Path) -> int:
    """How often the guest's journal of this boot mentions DHCP (0: nothing asked for a lease)."""
    answer = peer.ssh(key, V4, "sudo journalctl -b --no-pager | grep -ci dhcp; true")
    return int(answer.stdout.strip() or -1)


def panel_run(client, plan, image, key_pk, peer, key_path, n) -> tuple[dict, dict]:
    """One create through the portal; its times, and the network-config its seed carried."""
    started = time.time()
    response = client.post(
        "/vms/new/", {"plan": plan.pk, "image": image.pk, "hostname": f"bench-{n}", "ssh_keys": [key_pk]}
    )
    assert response.status_code == 302, response.content[:500]
    vm = VirtualMachine.objects.get(hostname=f"bench-{n}", deleted_at__isnull=True)
    answered = ssh_answers(peer, key_path)
    wait_for(lambda: VirtualMachine.objects.get(pk=vm.pk).ready_at is not None, timeout=120)
    vm.refresh_from_db()
    network_config = networking.network_config(vm)
    result = {
        "to start": vm.state_changed_at.timestamp() - started,
        "start -> ssh": answered - vm.state_changed_at.timestamp(),
        "create -> ssh": answered - started,
        "create -> ready shown": vm.ready_at.timestamp() - started,
        "DHCP in journal": dhcp_mentions(peer, key_path),
    }
    client.post(f"/vms/{vm.uuid}/delete/", {"confirm_hostname": vm.hostname})
    wait_for(lambda: VirtualMachine.objects.filter(pk=vm.pk, state="deleted").exists(), timeout=120)
    # The bench takes the same addresses again at once (the cool-down is for customers' addresses).
    Address.objects.filter(status="cooling").delete()
    return result, network_config


def raw_run(bridge: str, seed: bytes, mac: str, peer, key_path, with_filter: bool) -> dict:
    """The same guest with libvirt alone: overlay, seed volume, define, start; with_filter: the same
    traffic filter as the panel's VM (libvirt sets its rules up when the domain starts)."""
    vm_uuid = str(uuid.uuid4())
    name = f"bench-raw-{vm_uuid}"
    traffic_filter = f"bench-kvmpanel-raw-{vm_uuid}" if with_filter else None  # cleanup() knows the prefix
    nic = hypervisor.NicSpec(mac=mac, mode="bridge", source=bridge, filter_name=traffic_filter)
    started = time.time()
    with hypervisor.connect(URI) as node:
        if traffic_filter:
            node.define_filter(hypervisor.FilterSpec(name=traffic_filter, ipv4=(V4,), ipv6=(f"{V6}/128",)))
        node.create_overlay(POOL, f"{name}.qcow2", POOL, IMAGE_VOLUME, 4 * 1024**3)
        node.upload_bytes(POOL, f"{name}-seed.iso", seed)
        spec = hypervisor.DomainSpec(
            name=name, uuid=vm_uuid, title=name, virt_type="qemu", vcpus=1, memory_mib=512, pool=POOL,
            disk_volume=f"{name}.qcow2", network="", vnc_password=_setup.TAG[:8], hostname=name,
            cdrom_volumes=(f"{name}-seed.iso",), nics=(nic,),
        )  # fmt: skip
        node.define_domain(spec)
        node.start(name)
        domain_started = time.time()
    answered = ssh_answers(peer, key_path)
    result = {
        "to start": domain_started - started,
        "start -> ssh": answered - domain_started,
        "create -> ssh": answered - started,
        "create -> ready shown": float("nan"),
        "DHCP in journal": dhcp_mentions(peer, key_path),
    }
    with hypervisor.connect(URI) as node:
        for pool, volume in node.undefine(name):
            node.delete_volume(pool, volume)
        if traffic_filter:
            node.delete_filter(traffic_filter)
    return result


def raw_seed(hostname: str, network_config: dict, key_line: str) -> bytes:
    """The seed the panel gave its VM: same hostname, key and network-config (so the same MAC)."""
    spec = cloudinit.SeedSpec(
        instance_id=str(uuid.uuid4()),
        hostname=hostname,
        default_user="debian",
        ssh_keys=(key_line,),
        network_config=network_config,
    )
    return cloudinit.build_seed_iso(spec)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    worker = None
    columns = {"panel": [], "raw + filter": [], "raw libvirt": []}
    try:
        with netbed.guarded(), netbed.bridged(TAG) as bed, tempfile.TemporaryDirectory() as keys:
            plan, image, user, _node = prepare()
            node = register_node(
                NODE, URI, pool_name=POOL, network_name=NETWORK, network_mode="bridged", bridge=bed.bridge
            )
            for fields in (
                {"name": "v4", "prefix": "198.51.100.0/25", "gateway": netbed.PEER_V4, "first_address": V4},
                {
                    "name": "v6",
                    "prefix": "2001:db8:15::/64",
                    "gateway": netbed.PEER_V6,
                    "assign_prefix_length": 128,
                },
            ):
                pool = Pool(**fields)
                pool.full_clean()
                pool.save()
                pool.nodes.add(node)
            key_path = Path(keys) / "id_ed25519"
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key_path)], check=True)
            key_line = key_path.with_suffix(".pub").read_text().strip()
            from accounts.forms import AddSSHKeyForm

            form = AddSSHKeyForm({"name": "bench", "public_key": key_line}, user=user)
            assert form.is_valid(), form.errors
            key_pk = form.save().pk
            worker = start_worker()
            client = Client(HTTP_HOST="127.0.0.1")
            _setup.sign_in(client, user)
            for n in range(args.runs):
                result, network_config = panel_run(client, plan, image, key_pk, bed, key_path, n)
                columns["panel"].append(result)
                seed = raw_seed(f"bench-{n}", network_config, key_line)
                mac = network_config["ethernets"]["eth0"]["match"]["macaddress"]
                columns["raw + filter"].append(
                    raw_run(bed.bridge, seed, mac, bed, key_path, with_filter=True)
                )
                columns["raw libvirt"].append(
                    raw_run(bed.bridge, seed, mac, bed, key_path, with_filter=False)
                )
            report(columns)
    finally:
        stop_process(worker)
        cleanup()


def report(columns: dict[str, list[dict]]):
    rows = ["to start", "start -> ssh", "create -> ssh", "create -> ready shown", "DHCP in journal"]
    runs = len(columns["panel"])
    print(f"\nruns: {runs} (medians, seconds; the guest is emulated, so its boot varies by seconds)")
    print(f"{'':<26}" + "".join(f"{label:>16}" for label in columns))
    for row in rows:
        values = [statistics.median(run[row] for run in runs_) for runs_ in columns.values()]
        print(f"{row:<26}" + "".join(f"{value:>16.2f}" for value in values))
    panel, filtered, raw = (
        statistics.median(run["to start"] for run in columns[c])
        for c in ("panel", "raw + filter", "raw libvirt")
    )
    extra = 1000 * (panel - filtered)
    print(f"click -> domain started, panel over raw libvirt with the same filter: {extra:.0f} ms")
    print(f"the traffic filter's own cost at the domain's start: {1000 * (filtered - raw):.0f} ms")


if __name__ == "__main__":
    main()
