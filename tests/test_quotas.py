"""Customer limits: checked at create, shown in the portal, and never exceeded by parallel requests."""

import pytest
from django.urls import reverse

from vms import actions, quotas
from vms.models import VirtualMachine

from .factories import make_image, make_node, make_plan, make_user, make_vm, run_together

PASSWORD = "quota-test-pw-42"


@pytest.mark.django_db
def test_limits_come_from_the_account_or_the_operators_defaults(settings, alice, staff):
    settings.KVMPANEL_QUOTA_DEFAULTS = {"vms": 5, "vcpus": 8, "memory_mib": 4096, "disk_gb": 100}
    alice.max_vms = 2
    assert quotas.limits_for(alice) == quotas.Resources(vms=2, vcpus=8, memory_mib=4096, disk_gb=100)
    assert quotas.limits_for(staff) is None  # operators have no limits


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("limit", "message"),
    [
        ("max_vms", "limit of 1 VMs"),
        ("max_vcpus", "limit of 2 vCPUs"),
        ("max_memory_mib", "limit of 1024 MiB memory"),
    ],
)
def test_a_create_past_a_limit_is_refused_and_says_which(alice, enqueued, limit, message):
    plan = make_plan(vcpus=2, memory_mib=1024, disk_gb=10)
    make_vm(alice, plan=plan)
    setattr(alice, limit, {"max_vms": 1, "max_vcpus": 2, "max_memory_mib": 1024}[limit])
    alice.save()
    node = make_node()
    with pytest.raises(actions.ActionRefused, match=message):
        actions.create_vm(
            owner=alice, plan=plan, image=make_image(on=[node]), hostname="one-more", password=PASSWORD
        )
    assert VirtualMachine.objects.count() == 1


@pytest.mark.django_db
def test_deleted_vms_do_not_count_and_vms_being_created_do(alice):
    plan = make_plan(vcpus=1, memory_mib=512, disk_gb=4)
    make_vm(alice, plan=plan, state="deleted")
    make_vm(alice, plan=plan, state="provisioning")
    assert quotas.usage_of(alice) == quotas.Resources(vms=1, vcpus=1, memory_mib=512, disk_gb=4)


@pytest.mark.django_db
def test_the_portal_shows_usage_against_limits(client, alice):
    alice.max_vms = 4
    alice.save()
    make_vm(alice)
    client.force_login(alice)
    page = client.get(reverse("vms:list")).content.decode()
    assert 'id="quota"' in page and "1 / 4" in page


@pytest.mark.django_db(transaction=True)
def test_twenty_parallel_creates_with_a_limit_of_three_give_exactly_three(enqueued):
    """Run on SQLite and on PostgreSQL (scripts/test.sh): the lock and the count share one transaction."""
    owner = make_user("racer", max_vms=3)
    plan, image = make_plan(), make_image(on=[make_node()])

    def create(n: int) -> str:
        actions.create_vm(owner=owner, plan=plan, image=image, hostname=f"race-{n}", password=PASSWORD)
        return "created"

    outcomes = run_together(20, create)
    assert outcomes.count("created") == 3, outcomes
    assert all("limit of 3 VMs" in outcome for outcome in outcomes if outcome != "created")
    assert VirtualMachine.objects.filter(owner=owner).count() == 3


# Resizing ---------------------------------------------------------------------------------------


def test_a_resize_counts_only_the_difference_and_is_held_to_the_limit(alice, enqueued):
    from vms import actions
    from vms.choices import VMState

    alice.max_vcpus, alice.max_memory_mib = 4, 8192
    alice.save()
    small, medium, large = (
        make_plan(vcpus=1, memory_mib=1024, disk_gb=10),
        make_plan(vcpus=2, memory_mib=2048, disk_gb=20),
        make_plan(vcpus=8, memory_mib=4096, disk_gb=40),
    )
    make_vm(alice, plan=small)
    vm = make_vm(alice, plan=small, state=VMState.STOPPED)

    operation = actions.resize(vm, alice, medium)
    vm.refresh_from_db()
    assert vm.plan == medium  # counted with its new plan from now on (work in flight)
    assert operation.params == {"plan_id": medium.pk, "from_plan_id": small.pk}
    assert quotas.usage_of(alice).vcpus == 3

    operation.status = "succeeded"
    operation.save()
    with pytest.raises(actions.ActionRefused, match="limit of 4 vCPUs"):
        actions.resize(vm, alice, large)
    vm.refresh_from_db()
    assert vm.plan == medium


def test_a_disk_never_shrinks_and_a_running_vm_is_not_resized(alice, enqueued):
    from vms import actions
    from vms.choices import VMState

    big, small = make_plan(disk_gb=40), make_plan(disk_gb=10)
    vm = make_vm(alice, plan=big, state=VMState.STOPPED)
    with pytest.raises(actions.ActionRefused, match="can only grow"):
        actions.resize(vm, alice, small)
    vm.set_state(VMState.RUNNING)
    with pytest.raises(actions.ActionRefused, match="Cannot resize a VM that is running"):
        actions.resize(vm, alice, make_plan(disk_gb=80))
    assert not vm.operations.exists()
