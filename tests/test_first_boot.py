"""The first boot's password hash: made by the request while the task already works on the node."""

import threading
import time

import bcrypt
import pytest
import redis
from django.conf import settings
from django.db import connection

from vms import actions, first_boot
from vms.choices import OperationKind
from vms.models import Operation

from .factories import make_image, make_node, make_plan, make_user, make_vm

PASSWORD = "first-boot-Secret-42"


@pytest.fixture
def bells():
    """The test Redis, for looking at the doorbells (and nothing else) the hand-off leaves there."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    yield client
    for key in client.scan_iter("kvmpanel:first-boot:*"):
        client.delete(key)


def pending_operation(vm, kind=OperationKind.CREATE) -> Operation:
    return Operation.objects.create(
        vm=vm, kind=kind, params={"password_hash": first_boot.PENDING, "ssh_keys": [], "user_data": ""}
    )


def test_create_records_the_hash_and_rings_the_bell_after_the_commit(
    alice, enqueued, bells, django_capture_on_commit_callbacks
):
    image = make_image(on=[make_node()])
    with django_capture_on_commit_callbacks(execute=True):
        vm = actions.create_vm(owner=alice, plan=make_plan(), image=image, hostname="web", password=PASSWORD)
    operation = vm.operations.get()
    assert enqueued == [operation]
    assert bcrypt.checkpw(PASSWORD.encode(), operation.params["password_hash"].encode())
    # Redis carries only the bell, never the hash.
    assert bells.lrange(f"kvmpanel:first-boot:{operation.pk}", 0, -1) == [b"1"]


def test_a_login_by_key_alone_has_nothing_to_wait_for(alice, enqueued):
    image = make_image(on=[make_node()])
    vm = actions.create_vm(owner=alice, plan=make_plan(), image=image, hostname="web")
    operation = vm.operations.get()
    assert operation.params["password_hash"] == ""
    assert first_boot.settings_of(operation) is operation.params


def test_a_bad_password_is_refused_before_anything_is_recorded(alice, enqueued):
    image = make_image(on=[make_node()])
    with pytest.raises(ValueError, match="NUL"):
        actions.create_vm(owner=alice, plan=make_plan(), image=image, hostname="web", password="a\0b")
    assert not Operation.objects.exists() and enqueued == []


@pytest.mark.django_db(transaction=True)
def test_the_task_waits_for_a_hash_the_request_delivers_later(bells):
    """The real order on a fast node: the task asks before the request has finished hashing."""
    operation = pending_operation(make_vm(make_user("carol")))
    delay = 0.3

    def request_finishes_later():
        time.sleep(delay)
        first_boot.PasswordHash(PASSWORD).deliver(Operation.objects.get(pk=operation.pk))
        connection.close()

    request = threading.Thread(target=request_finishes_later)
    started = time.monotonic()
    request.start()
    params = first_boot.settings_of(operation)
    request.join()
    assert time.monotonic() - started >= delay
    assert bcrypt.checkpw(PASSWORD.encode(), params["password_hash"].encode())


def test_a_hash_delivered_after_the_operation_ended_is_not_kept(alice, bells):
    operation = pending_operation(make_vm(alice))
    operation.mark_failed("the hash never came")
    first_boot.PasswordHash(PASSWORD).deliver(operation)
    operation.refresh_from_db()
    assert "password_hash" not in operation.params
