from dataclasses import asdict

from vms import quotas


def of(user) -> dict:
    """Limits and usage as numbers (vms.quotas decides both); limits None for staff."""
    limits = quotas.limits_for(user)
    return {"limits": asdict(limits) if limits else None, "usage": asdict(quotas.usage_of(user))}
