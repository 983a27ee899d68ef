"""Time from "Create" in the portal to a running domain, against the same steps done directly with libvirt.

    .venv/bin/python bench/create_to_running.py [--runs 5] [--boot]

Both columns run in this one process, on this machine's libvirtd, in a pool and
network of the benchmark's own (bench-…), removed at the end. The panel column
goes through everything a customer's click does: the create view, the
Operation row, Redis, a real Celery worker process, the hypervisor door, and
the state written back to the database (polled every 5 ms here).
`--boot` also times one guest from the start call to its login prompt.
"""

import argparse
import statistics
import time
import uuid
from pathlib import Path

import _setup
import libvirt
from _setup import IMAGE_VOLUME, NETWORK, POOL, URI, cleanup, prepare, start_worker, stop_process
from django.test import Client

from vms import hypervisor
from vms.hypervisor import xml
from vms.models import VirtualMachine


def wait_for(condition, timeout=120.0, poll=0.005):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(poll)


def panel_create(client, plan, image, n) -> tuple[float, VirtualMachine]:
    started = time.perf_counter()
    response = client.post(
        "/vms/new/",
        {"plan": plan.pk, "image": image.pk, "hostname": f"bench-{n}", "password": "bench-password-42"},
    )
    assert response.status_code == 302, response.content[:500]
    vm = VirtualMachine.objects.get(hostname=f"bench-{n}", deleted_at__isnull=True)
    wait_for(lambda: VirtualMachine.objects.filter(pk=vm.pk, state="running").exists())
    return time.perf_counter() - started, vm


def panel_delete(client, vm):
    client.post(f"/vms/{vm.uuid}/delete/", {"confirm_hostname": vm.hostname})
    wait_for(lambda: VirtualMachine.objects.filter(pk=vm.pk, state="deleted").exists())


def raw_create(conn) -> tuple[float, str]:
    """The same steps with libvirt directly: overlay volume, define, start."""
    vm_uuid = str(uuid.uuid4())
    name = f"bench-raw-{vm_uuid}"
    started = time.perf_counter()
    pool = conn.storagePoolLookupByName(POOL)
    backing = pool.storageVolLookupByName(IMAGE_VOLUME)
    pool.createXML(xml.volume_xml(f"{name}.qcow2", 4 * 1024**3, "qcow2", (backing.path(), "qcow2")), 0)
    spec = hypervisor.DomainSpec(
        name=name, uuid=vm_uuid, title=name, virt_type="qemu", vcpus=1, memory_mib=512, pool=POOL,
        disk_volume=f"{name}.qcow2", network=NETWORK, vnc_password=_setup.TAG[:8],
    )  # fmt: skip
    conn.defineXML(xml.domain_xml(spec)).create()
    return time.perf_counter() - started, name


def raw_delete(conn, name):
    domain = conn.lookupByName(name)
    domain.destroy()
    domain.undefine()
    conn.storagePoolLookupByName(POOL).storageVolLookupByName(f"{name}.qcow2").delete(0)


def time_to_login(client, plan, image) -> float:
    started = time.perf_counter()
    _, vm = panel_create(client, plan, image, "boot")
    log = Path(xml.serial_log_path(vm.domain_name))
    wait_for(lambda: log.exists() and "login:" in log.read_text(errors="replace"), timeout=600, poll=0.2)
    elapsed = time.perf_counter() - started
    panel_delete(client, vm)
    return elapsed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--boot", action="store_true", help="also time one guest to its login prompt")
    args = parser.parse_args()
    worker = None
    try:
        plan, image, user, _node = prepare()
        worker = start_worker()
        client = Client(HTTP_HOST="127.0.0.1")
        _setup.sign_in(client, user)
        conn = libvirt.open(URI)
        panel, raw = [], []
        for n in range(args.runs):
            seconds, name = raw_create(conn)
            raw.append(seconds)
            raw_delete(conn, name)
            seconds, vm = panel_create(client, plan, image, n)
            panel.append(seconds)
            panel_delete(client, vm)
        report(panel, raw)
        if args.boot:
            print(
                f"create request -> guest login prompt: {time_to_login(client, plan, image):.1f} s (emulated)"
            )
    finally:
        stop_process(worker)
        cleanup()


def report(panel, raw):
    p, r = statistics.median(panel), statistics.median(raw)
    print(f"{'runs':<28}{len(panel):>10}")
    print(f"{'':<28}{'panel':>10}{'raw libvirt':>14}")
    print(f"{'median create->running (s)':<28}{p:>10.3f}{r:>14.3f}")
    print(f"{'min (s)':<28}{min(panel):>10.3f}{min(raw):>14.3f}")
    print(f"{'max (s)':<28}{max(panel):>10.3f}{max(raw):>14.3f}")
    print(f"panel overhead (median): {1000 * (p - r):.0f} ms, {100 * (p - r) / r:.0f} %")


if __name__ == "__main__":
    main()
