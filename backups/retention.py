"""Which backups a schedule's retention keeps: the newest N, and the newest of each of N days, weeks and
months (the same rules as restic's `forget --keep-*`, applied to the panel's rows so that the rows and
the store never disagree)."""

from collections.abc import Callable, Iterable

from django.utils import timezone

from .models import Backup, BackupSchedule


def to_prune(backups: Iterable[Backup], schedule: BackupSchedule) -> list[Backup]:
    """The complete backups the schedule no longer keeps (newest first in, oldest kept last)."""
    ordered = sorted(backups, key=lambda b: (b.created_at, b.pk), reverse=True)
    keep = {b.pk for b in ordered[: schedule.keep_last]}
    periods: list[tuple[int, Callable]] = [
        (schedule.keep_daily, lambda at: at.date()),
        (schedule.keep_weekly, lambda at: at.isocalendar()[:2]),
        (schedule.keep_monthly, lambda at: (at.year, at.month)),
    ]
    for count, period_of in periods:
        seen = []
        for backup in ordered:
            period = period_of(timezone.localtime(backup.created_at))
            if period not in seen and len(seen) < count:
                seen.append(period)
                keep.add(backup.pk)
    if not keep and ordered:
        keep.add(ordered[0].pk)  # a schedule never removes a VM's last backup
    return [b for b in ordered if b.pk not in keep]
