"""The fixed cast and the libvirt test driver.

alice owns VMs, bob is another customer (the outsider), staff runs the platform.
"""

import contextlib
import time
from pathlib import Path

import pytest

import hypervisor

from .factories import make_node, make_token, make_user, make_vm
from .powerdns import powerdns, powerdns_server  # noqa: F401  (fixtures: a real PowerDNS for the rDNS tests)

TEST_NODE_XML = """<node>
  <cpu><nodes>1</nodes><sockets>1</sockets><cores>4</cores><threads>1</threads>
       <active>4</active><mhz>2000</mhz><model>x86_64</model></cpu>
  <memory>8388608</memory>
</node>
"""


@pytest.fixture(autouse=True)
def _forget_cached_counters():
    """The cache is Redis, shared with later tests: drop the panel's keys (rate limits, mail throttles).

    Only keys under the panel's prefix: Celery and Channels use the same Redis database.
    """
    yield
    from django.conf import settings
    from django.core.cache import cache

    redis = cache._cache.get_client(write=True)
    prefix = settings.CACHES["default"]["KEY_PREFIX"]
    keys = list(redis.scan_iter(f"{prefix}:*"))
    if keys:
        redis.delete(*keys)


@pytest.fixture
def alice(db):
    return make_user("alice")


@pytest.fixture
def bob(db):
    return make_user("bob")


@pytest.fixture
def staff(db):
    return make_user("staff", is_staff=True)


@pytest.fixture
def enqueued(monkeypatch):
    """Operations are recorded but no task runs: the list of what would have been enqueued."""
    from vms import actions

    calls = []
    monkeypatch.setattr(actions, "enqueue", lambda operation: calls.append(operation))
    return calls


@pytest.fixture
def sign_in_confirmed(client):
    """Sign `user` in as if they had just typed their password (sensitive pages ask for it again)."""
    from accounts import reauth

    def sign_in(user):
        client.force_login(user)
        session = client.session
        session[reauth.CONFIRMED_AT] = time.time()
        session.save()

    return sign_in


@pytest.fixture
def alice_vm(alice):
    return make_vm(alice)


@pytest.fixture
def test_driver_uri(tmp_path: Path) -> str:
    """A fresh libvirt test-driver node for this test (a node XML file of its own)."""
    node_file = tmp_path / "node.xml"
    node_file.write_text(TEST_NODE_XML)
    return f"test://{node_file}"


@pytest.fixture
def test_session(test_driver_uri, monkeypatch):
    """One open test-driver connection, prepared like a real node, shared by every task in the test.

    The test driver forgets everything when a connection closes, so tasks that
    open their own connection are given this one instead (we mock at the door).
    """
    with hypervisor.connect(test_driver_uri) as session:
        session.ensure_pool("test-pool", "/test-pool")
        session.ensure_network("test-net", "kvp-test")

        @contextlib.contextmanager
        def reuse(uri):
            assert uri == test_driver_uri
            yield session

        monkeypatch.setattr(hypervisor, "connect", reuse)
        yield session


@pytest.fixture
def test_node(db, test_driver_uri, test_session):
    return make_node(uri=test_driver_uri)


# The REST API (tests/test_api_*.py).


@pytest.fixture
def fresh_api_rates():
    """Forget every rate-limit counter: they live in the test Redis and outlive a test database."""
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter(match="*throttle_*"):
        client.delete(key)


@pytest.fixture
def no_tasks(monkeypatch):
    """Requested operations are recorded but never run (vms.actions.enqueue is the door to the worker)."""
    from vms import actions

    queued = []
    monkeypatch.setattr(actions, "enqueue", queued.append)
    return queued


@pytest.fixture
def as_staff(staff, api_client, no_tasks):
    """An API client with a staff member's token; nothing it asks for is enqueued."""
    return api_client(staff)


@pytest.fixture
def api_client(fresh_api_rates):
    """api_client(user, scope="write") -> a DRF test client sending that user's new Bearer token."""
    from rest_framework.test import APIClient

    def make(user=None, scope="write", **token_fields):
        client = APIClient()
        if user is not None:
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token(user, scope, **token_fields)}")
        return client

    return make


@pytest.fixture
def fleet(monkeypatch):
    """Fake nodes by URI (tests/fake_nodes.py); hypervisor.connect hands out the one asked for."""
    from .fake_nodes import FakeNode

    fakes: dict[str, FakeNode] = {}

    @contextlib.contextmanager
    def connect(uri):
        fake = fakes[uri]
        if not fake.reachable:
            raise hypervisor.NodeUnreachable(f"{uri} does not answer")
        yield fake

    monkeypatch.setattr(hypervisor, "connect", connect)
    return fakes
