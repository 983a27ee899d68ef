"""The backoffice: a live dashboard first, strays paged with Adopt and Remove (marked domains only, after
a confirmation), internals for superusers only, and the image and node forms' fixes."""

import datetime as dt
import re

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from accounts.models import AuditEntry
from images.models import Image
from network.choices import AddressStatus
from network.models import Address, Pool
from nodes.choices import NodeStatus
from vms import reconcile, strays, tasks
from vms.choices import OperationKind, OperationStatus, VMState
from vms.models import Operation

from .factories import make_image, make_node, make_plan, make_user, make_vm
from .test_reconcile import FOREIGN_DOMAIN, defined

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(db):
    return make_user("operator", is_staff=True, is_superuser=True)


@pytest.fixture
def as_operator(client, operator):
    client.force_login(operator)
    return client


# The dashboard --------------------------------------------------------------------------------


def test_the_backoffice_opens_on_a_dashboard_of_the_platform(as_operator, alice):
    busy = make_node(name="hv-1", cpus=8, memory_mib=16384, storage_capacity_bytes=100 * 1024**3)
    make_node(name="hv-2", status=NodeStatus.UNREACHABLE)
    plan = make_plan(vcpus=2, memory_mib=2048, disk_gb=20)
    running = make_vm(alice, node=busy, plan=plan)
    make_vm(alice, node=busy, plan=plan, state=VMState.STOPPED)
    make_vm(alice, node=busy, plan=plan, state=VMState.DELETED)  # gone: counts for nothing
    Operation.objects.create(vm=running, kind=OperationKind.REBOOT, status=OperationStatus.FAILED)
    old = Operation.objects.create(vm=running, kind=OperationKind.START, status=OperationStatus.FAILED)
    Operation.objects.filter(pk=old.pk).update(created_at=timezone.now() - dt.timedelta(days=2))
    html = as_operator.get(reverse("admin:index")).content.decode()
    assert 'data-live-any data-live-url="/backoffice/dashboard/"' in html
    text = " ".join(re.sub(r"<[^>]+>", " ", html).split())
    assert "2 nodes 1 not answering" in text and "Not answering: hv-2 (unreachable)" in text
    assert "2 VMs 1 running · 1 stopped" in text
    assert "1 failed operations in the last day" in text
    assert "hv-1 Online 2 4 of 8" in text and "4 of 16 GiB" in text and "40 of 100 GiB" in text


def test_the_dashboard_shows_each_pools_use_and_follows_it(as_operator):
    node = make_node()
    pool = Pool(name="public-v4", prefix="198.51.100.0/28", gateway="198.51.100.1")
    pool.full_clean()
    pool.save()
    pool.nodes.add(node)
    for number, status in ((2, AddressStatus.RESERVED), (3, AddressStatus.RESERVED)):
        Address.objects.create(pool=pool, address=f"198.51.100.{number}", prefix_length=32, status=status)

    def shown() -> str:
        html = as_operator.get(reverse("dashboard")).content.decode()
        return " ".join(re.sub(r"<[^>]+>", " ", html[html.index('id="pool-usage"') :]).split())

    assert "public-v4 198.51.100.0/28 0 2 0 15 % of 13" in shown()
    before = as_operator.get(reverse("dashboard")).content.decode()
    Address.objects.filter(address="198.51.100.3").update(
        status=AddressStatus.COOLING, cooling_until=timezone.now() + dt.timedelta(hours=1)
    )
    after = as_operator.get(reverse("dashboard")).content.decode()
    assert "public-v4 198.51.100.0/28 0 1 1 15 % of 13" in shown()
    version = re.compile(r'data-live-version="(\w+)"')
    assert version.search(before).group(1) != version.search(after).group(1)  # the live page swaps


def test_the_dashboard_block_is_for_staff_only_and_has_a_version(client, alice, operator):
    client.force_login(alice)
    assert client.get(reverse("dashboard")).status_code in (302, 403)
    client.force_login(operator)
    first = client.get(reverse("dashboard")).content.decode()
    version = re.search(r'data-live-version="(\w+)"', first).group(1)
    assert version in client.get(reverse("dashboard")).content.decode()
    make_vm(alice)
    assert version not in client.get(reverse("dashboard")).content.decode()


# Strays -------------------------------------------------------------------------------------


def test_strays_are_paged_below_the_nodes_usage_graphs(as_operator):
    node = make_node()
    node.stray_domains = [
        {"name": f"stray-{n:04d}", "state": "running", "panel_metadata": False} for n in range(120)
    ]
    node.save()
    html = as_operator.get(reverse("admin:nodes_node_change", args=[node.pk])).content.decode()
    assert html.index('id="usage"') < html.index("<fieldset") < html.index('id="strays"')
    assert (
        html.count("<tr data-stray=") == 50
        and "page 1 of 3" in html
        and "Domains no VM of this node owns (120" in html
    )
    assert "Remove…" not in html and "left untouched" in html  # none carries the marker
    page3 = as_operator.get(
        reverse("admin:nodes_node_change", args=[node.pk]), {"strays": 3}
    ).content.decode()
    assert page3.count("<tr data-stray=") == 20


def stray_url(node, action, name):
    return reverse("admin:nodes_node_stray", args=[node.pk, action]) + f"?name={name}"


def test_a_marked_stray_is_adopted_back_to_the_vm_it_names_after_confirmation(
    as_operator, alice, test_node, test_session
):
    away = make_node(name="old-node")
    vm = make_vm(alice, node=away, state=VMState.MISSING)  # its domain turned up on test_node
    vm.node = test_node  # only to define the domain there
    defined(test_session, vm)
    vm.node = away
    reconcile.reconcile_node(test_node)
    test_node.refresh_from_db()
    assert [stray["name"] for stray in test_node.stray_domains] == [vm.domain_name]
    confirm = as_operator.get(stray_url(test_node, "adopt", vm.domain_name)).content.decode()
    assert "Adopting records that this VM lives on" in confirm
    vm.refresh_from_db()
    assert vm.node == away  # a GET changes nothing
    as_operator.post(
        reverse("admin:nodes_node_stray", args=[test_node.pk, "adopt"]), {"name": vm.domain_name}
    )
    vm.refresh_from_db()
    test_node.refresh_from_db()
    assert (vm.node, vm.state, test_node.stray_domains) == (test_node, VMState.RUNNING, [])
    assert AuditEntry.objects.filter(action="vm.adopt", outcome="succeeded").exists()


def test_a_stray_without_the_marker_is_never_removed(as_operator, test_node, test_session, monkeypatch):
    test_session._conn.defineXML(FOREIGN_DOMAIN)
    reconcile.reconcile_node(test_node)
    test_node.refresh_from_db()
    queued = []
    monkeypatch.setattr(strays.current_app, "send_task", lambda *args, **kwargs: queued.append(args))
    response = as_operator.post(
        reverse("admin:nodes_node_stray", args=[test_node.pk, "remove"]),
        {"name": "someone-elses"},
        follow=True,
    )
    assert "not made by kvmpanel (no marker): the panel never removes it" in response.content.decode()
    assert queued == []
    # And the worker refuses it at the door, whatever asked.
    tasks.remove_stray(test_node.pk, "someone-elses")
    assert "someone-elses" in test_session.domain_names()
    assert AuditEntry.objects.filter(action="node.remove_stray", outcome="refused").exists()


def test_a_marked_stray_is_removed_by_the_worker_with_its_own_disks(
    as_operator, alice, test_node, test_session, monkeypatch, django_capture_on_commit_callbacks
):
    leftover = make_vm(alice, node=test_node)
    defined(test_session, leftover)
    leftover.state = VMState.DELETED  # its row was deleted, its domain stayed behind
    leftover.save()
    reconcile.reconcile_node(test_node)
    test_node.refresh_from_db()
    queued = []
    monkeypatch.setattr(
        strays.current_app, "send_task", lambda name, args, queue: queued.append((name, args, queue))
    )
    assert (
        "This cannot be undone"
        in as_operator.get(stray_url(test_node, "remove", leftover.domain_name)).content.decode()
    )
    with django_capture_on_commit_callbacks(execute=True):
        as_operator.post(
            reverse("admin:nodes_node_stray", args=[test_node.pk, "remove"]), {"name": leftover.domain_name}
        )
    assert queued == [("vms.tasks.remove_stray", (test_node.pk, leftover.domain_name), test_node.queue)]
    tasks.remove_stray(*queued[0][1])  # what the node's worker runs
    assert not test_session.domain_exists(leftover.domain_name)
    test_node.refresh_from_db()
    assert test_node.stray_domains == []


def test_adopting_needs_a_vm_row_to_give_it_back_to(test_node):
    test_node.stray_domains = [
        {"name": "test-6f1c6c2e-4c9b-4a3e-9a4e-0c1d2e3f4a5b", "state": "running", "panel_metadata": True}
    ]
    test_node.save()
    with pytest.raises(strays.StrayRefused, match="nothing to give it back to"):
        strays.adopt(test_node, "test-6f1c6c2e-4c9b-4a3e-9a4e-0c1d2e3f4a5b")


# Internals are for superusers -----------------------------------------------------------------


def test_staff_who_are_not_superusers_see_no_internals(client):
    clerk = make_user("clerk", is_staff=True)
    clerk.user_permissions.set(Permission.objects.all())  # every permission, still not a superuser
    client.force_login(clerk)
    index = client.get(reverse("admin:index")).content.decode()
    for internal in ("Access attempts", "TOTP devices", "Static devices", "Groups"):
        assert internal not in index
    assert "Virtual machines" in index and "Images" in index
    for url in (
        "admin:axes_accessattempt_changelist",
        "admin:otp_totp_totpdevice_changelist",
        "admin:auth_group_changelist",
    ):
        assert client.get(reverse(url)).status_code == 403


def test_superusers_still_see_them(as_operator):
    index = as_operator.get(reverse("admin:index")).content.decode()
    assert "Access attempts" in index and "Groups" in index


# Forms ----------------------------------------------------------------------------------------


def test_a_refused_image_url_is_not_shown_back_as_a_link(as_operator):
    data = {"name": "x", "os_family": "debian", "min_disk_gb": 2, "default_user": "debian", "active": "on"}
    html = as_operator.post(
        reverse("admin:images_image_add"), {**data, "source_url": "http://10.0.0.1/x.qcow2"}
    ).content.decode()
    assert "private address" in html and "Currently:" not in html and 'href="http://10.0.0.1' not in html
    assert "KVMPANEL_IMAGE_ALLOW_PRIVATE=1" in html  # the refusal names the setting


def test_the_node_add_form_shows_no_block_of_zeros(as_operator):
    html = as_operator.get(reverse("admin:nodes_node_add")).content.decode()
    assert "As libvirt last reported" not in html and 'name="uri"' in html


def test_an_iso_image_hides_the_fields_only_disk_images_have(as_operator):
    iso = make_image(format=Image.Format.ISO)
    html = as_operator.get(reverse("admin:images_image_change", args=[iso.pk])).content.decode()
    for field in ("min_disk_gb", "default_user", "cloud_init", "rescue"):
        assert f'name="{field}"' not in html
    disk = make_image()
    assert (
        'name="min_disk_gb"'
        in as_operator.get(reverse("admin:images_image_change", args=[disk.pk])).content.decode()
    )
