"""The project's own hypervisor errors. Nothing outside hypervisor/ sees libvirtError."""


class HypervisorError(Exception):
    """Base class. `transient` errors may succeed when retried."""

    transient = False


class NotFound(HypervisorError):
    """The domain, volume, pool or network does not exist."""


class NodeUnreachable(HypervisorError):
    """The node's libvirtd cannot be reached right now."""

    transient = True


class Busy(HypervisorError):
    """libvirt is busy with something else on the object (a pool building a volume, a domain's
    state change lock held): not a refusal, so the operation is tried again after a while."""

    transient = True


class Conflict(HypervisorError):
    """The object is in a state that does not allow the request (e.g. already running)."""


class OperationFailed(HypervisorError):
    """libvirt refused or failed the request for another reason."""


class NotOurs(HypervisorError):
    """The object exists but was not made by the panel: we never touch it."""
