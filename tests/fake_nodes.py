"""Nodes at the hypervisor door for the image library's tests: pools of volumes held in memory (the real
copies over libvirt streams are in tests/integration/test_image_library.py). The `fleet` fixture
(conftest.py) hands them out by URI."""

import hashlib

from .factories import make_node

DATA = b"QFI\xfb the image's bytes"
CHECKSUM = hashlib.sha256(DATA).hexdigest()


class FakeNode:
    """A node's pools as the door shows them: {pool: {volume: bytes}}."""

    def __init__(self, reachable: bool = True):
        self.pools: dict[str, dict[str, bytes]] = {"test-pool": {}}
        self.reachable = reachable
        self.hashed = []

    def volume_exists(self, pool, name):
        return name in self.pools[pool]

    def volume_bytes(self, pool, name):
        return len(self.pools[pool][name])

    def volume_sha256(self, pool, name):
        self.hashed.append(name)
        return hashlib.sha256(self.pools[pool][name]).hexdigest()

    def delete_volume(self, pool, name):
        return self.pools[pool].pop(name, None) is not None

    def upload_volume(self, pool, name, source_file):
        with open(source_file, "rb") as handle:
            self.pools[pool][name] = handle.read()

    def copy_volume_to(self, pool, name, target, target_pool):
        data = self.pools[pool][name]
        target.pools[target_pool][name] = data
        return hashlib.sha256(data).hexdigest()


def node_with(fleet, volumes=None, **fields):
    node = make_node(**fields)
    fleet[node.uri] = FakeNode()
    fleet[node.uri].pools["test-pool"].update(volumes or {})
    return node
