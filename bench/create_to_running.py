"""Time from "Create" in the portal to a running domain, against the same steps done directly with libvirt.

    .venv/bin/python bench/create_to_running.py [--runs 5] [--boot]

Both columns run in this one process, on this machine's libvirtd, in a pool and
network of the benchmark's own (bench-…), removed at the end. The panel column
goes through everything a customer's click does: the create view, the
Operation row, Redis, a real Celery worker process, the hypervisor door, and
the state written back to the database (its time of writing is the end).
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
from django.conf import settings
from django.test import Client

import hypervisor
from hypervisor import xml
from vms.models import VirtualMachine

PASSWORD_LOGIN = {"password": "bench-password-42"}


def add_ssh_key(user) -> dict:
    """An SSH key in the bench user's account; the create form's value that picks it."""
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from accounts.forms import AddSSHKeyForm

    public = ed25519.Ed25519PrivateKey.generate().public_key()
    line = public.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode() + " bench@host"
    form = AddSSHKeyForm({"name": "bench", "public_key": line}, user=user)
    assert form.is_valid(), form.errors
    return {"ssh_keys": [form.save().pk]}


def wait_for(condition, timeout=120.0, poll=0.005):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(poll)


def panel_create(client, plan, image, n, login=None) -> tuple[float, VirtualMachine]:
    """Create through the portal; `login` is the first-boot login: a password (the default) or a key.

    The time is taken from the row: when the worker recorded the VM running (state_changed_at,
    the same clock). Polling every few ms instead would take CPU from QEMU's start on a small
    machine, a cost the raw column does not pay.
    """
    started = time.time()
    response = client.post(
        "/vms/new/",
        {"plan": plan.pk, "image": image.pk, "hostname": f"bench-{n}", **(login or PASSWORD_LOGIN)},
    )
    assert response.status_code == 302, response.content[:500]
    vm = VirtualMachine.objects.get(hostname=f"bench-{n}", deleted_at__isnull=True)
    wait_for(lambda: VirtualMachine.objects.filter(pk=vm.pk, state="running").exists(), poll=0.1)
    vm.refresh_from_db()
    return vm.state_changed_at.timestamp() - started, vm


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
    parser.add_argument(
        "--compare-cost", type=int, metavar="N", help="add a password column hashed at bcrypt cost N"
    )
    args = parser.parse_args()
    worker = None
    try:
        plan, image, user, _node = prepare()
        worker = start_worker()
        client = Client(HTTP_HOST="127.0.0.1")
        _setup.sign_in(client, user)
        conn = libvirt.open(URI)
        key_login = add_ssh_key(user)
        default_cost = settings.KVMPANEL_GUEST_PASSWORD_COST
        panel = {"panel, password": (PASSWORD_LOGIN, default_cost), "panel, SSH key": (key_login, None)}
        if args.compare_cost:
            panel[f"password, cost {args.compare_cost}"] = (PASSWORD_LOGIN, args.compare_cost)
        columns = {label: [] for label in [*panel, "raw libvirt"]}
        for n in range(args.runs):  # interleaved, so a slower minute of the machine hits every column
            seconds, name = raw_create(conn)
            columns["raw libvirt"].append(seconds)
            raw_delete(conn, name)
            for label, (login, cost) in panel.items():
                settings.KVMPANEL_GUEST_PASSWORD_COST = cost or default_cost  # hashed in this process
                seconds, vm = panel_create(client, plan, image, f"{n}-{len(columns[label])}", login)
                columns[label].append(seconds)
                panel_delete(client, vm)
        settings.KVMPANEL_GUEST_PASSWORD_COST = default_cost
        report(columns)
        if args.boot:
            print(
                f"create request -> guest login prompt: {time_to_login(client, plan, image):.1f} s (emulated)"
            )
    finally:
        stop_process(worker)
        cleanup()


def report(columns: dict[str, list[float]]):
    raw = statistics.median(columns["raw libvirt"])
    print(f"{'runs':<28}{len(columns['raw libvirt']):>10}")
    print(f"{'':<28}" + "".join(f"{label:>20}" for label in columns))
    for row, pick in (("median create->running (s)", statistics.median), ("min (s)", min), ("max (s)", max)):
        print(f"{row:<28}" + "".join(f"{pick(times):>20.3f}" for times in columns.values()))
    for label, times in columns.items():
        if label != "raw libvirt":
            extra = statistics.median(times) - raw
            print(f"{label} over raw libvirt (median): {1000 * extra:.0f} ms, {100 * extra / raw:.0f} %")
    cost = settings.KVMPANEL_GUEST_PASSWORD_COST
    print(
        f"(the password column hashes it with bcrypt at cost {cost} in the request, beside the node's "
        f"work: {1000 * hashing_time():.0f} ms alone on this machine)"
    )


def hashing_time() -> float:
    from vms import cloudinit

    return statistics.median(timed(cloudinit.hash_password, PASSWORD_LOGIN["password"]) for _ in range(5))


def timed(function, *args) -> float:
    started = time.perf_counter()
    function(*args)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
