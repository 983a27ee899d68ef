"""Usage statistics, for nodes and VMs alike: rates from counter samples, roll-ups into coarser
tiers, pruning, and graph series.

Both NodeUsage (here) and vms.VMUsage are UsageSample tables; the functions below take the
model. vms/usage.py records the node monitor's readings into both.
"""

import datetime as dt
import itertools
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Avg, Max, Min
from django.utils import timezone

import hypervisor

from .models import UsageSample


@dataclass(frozen=True)
class Tier:
    """Samples of one resolution and how long they are kept."""

    bucket_seconds: int  # 0: raw samples, one per collection interval
    keep: dt.timedelta


# Raw for the last hour, 5-minute averages for a day, hourly averages for a month.
TIERS = (
    Tier(UsageSample.RAW, dt.timedelta(hours=1, minutes=5)),
    Tier(300, dt.timedelta(days=1, hours=1)),
    Tier(3600, dt.timedelta(days=31, hours=1)),
)
# What each graph range shows: (tier, span).
RANGES = {
    "hour": (UsageSample.RAW, dt.timedelta(hours=1)),
    "day": (300, dt.timedelta(days=1)),
    "month": (3600, dt.timedelta(days=31)),
}
# Two readings further apart than this many intervals give no rate (the monitor was away).
MAX_GAP_INTERVALS = 3


@dataclass(frozen=True)
class Rates:
    """One domain's usage over one interval."""

    cpu_cores: float  # cores busy on average: 0.5 is half of one core
    cpu_percent: float  # of the domain's vCPUs
    memory_bytes: int | None
    disk_read_bps: float
    disk_write_bps: float
    net_rx_bps: float
    net_tx_bps: float


def counter_delta(previous: int | None, current: int | None) -> int:
    """How much a cumulative counter grew; a smaller value means it restarted from zero (VM restart)."""
    if previous is None or current is None:
        return 0
    return current - previous if current >= previous else current


def compute_rates(
    previous: hypervisor.DomainCounters, current: hypervisor.DomainCounters, seconds: float
) -> Rates:
    def per_second(field: str) -> float:
        return counter_delta(getattr(previous, field), getattr(current, field)) / seconds

    cpu_cores = per_second("cpu_time_ns") / 1e9
    vcpus = max(current.vcpus, 1)
    return Rates(
        cpu_cores=cpu_cores,
        # Clock skew between the two readings can push this a hair over 100.
        cpu_percent=min(100.0, 100.0 * cpu_cores / vcpus),
        memory_bytes=current.memory_used_bytes,
        disk_read_bps=per_second("disk_read_bytes"),
        disk_write_bps=per_second("disk_write_bytes"),
        net_rx_bps=per_second("net_rx_bytes"),
        net_tx_bps=per_second("net_tx_bytes"),
    )


# --- roll-ups and pruning ------------------------------------------------------


def roll_up(model: type[UsageSample], now: dt.datetime) -> int:
    """Average each finished bucket of every tier from the tier below it. Returns rows written."""
    written = 0
    for source, target in itertools.pairwise(TIERS):
        for bucket in _buckets_to_roll(model, source, target, now):
            written += _roll_bucket(model, source, target, bucket)
    return written


def _buckets_to_roll(model, source: Tier, target: Tier, now: dt.datetime) -> list[dt.datetime]:
    """Finished target buckets after the last one rolled, as far back as the source tier reaches."""
    step = dt.timedelta(seconds=target.bucket_seconds)
    # A raw reading can be stored a moment after it was read: wait out one interval.
    finished_before = _floor(now - dt.timedelta(seconds=settings.KVMPANEL_STATS_INTERVAL + 5), step)
    last_rolled = model.objects.filter(bucket_seconds=target.bucket_seconds).aggregate(last=Max("at"))["last"]
    source_rows = model.objects.filter(bucket_seconds=source.bucket_seconds)
    if last_rolled is not None:
        source_rows = source_rows.filter(at__gte=last_rolled + step)
    # From the oldest reading not yet rolled up: a long pause costs no empty buckets.
    oldest = source_rows.aggregate(first=Min("at"))["first"]
    if oldest is None:
        return []
    start = _floor(oldest, step)
    buckets = []
    while start < finished_before:
        buckets.append(start)
        start += step
    return buckets


def _roll_bucket(model, source: Tier, target: Tier, bucket: dt.datetime) -> int:
    key = model.OWNER_FIELD
    end = bucket + dt.timedelta(seconds=target.bucket_seconds)
    averages = (
        model.objects.filter(bucket_seconds=source.bucket_seconds, at__gte=bucket, at__lt=end)
        .values(key)
        .annotate(**{f"avg_{metric}": Avg(metric) for metric in model.METRICS})
    )
    rows = [
        model(
            bucket_seconds=target.bucket_seconds,
            at=bucket,
            **{key: row[key]},
            **{metric: _typed(model, metric, row[f"avg_{metric}"]) for metric in model.METRICS},
        )
        for row in averages
    ]
    model.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


def prune(model: type[UsageSample], now: dt.datetime) -> int:
    """Delete what each tier no longer keeps. Returns rows deleted."""
    deleted = 0
    for tier in TIERS:
        count, _ = model.objects.filter(bucket_seconds=tier.bucket_seconds, at__lt=now - tier.keep).delete()
        deleted += count
    return deleted


def _typed(model, metric: str, value):
    """Averages come back as floats; integer columns get integers."""
    if value is None:
        return None
    integer = model._meta.get_field(metric).get_internal_type().endswith("IntegerField")
    return round(value) if integer else value


def _floor(moment: dt.datetime, step: dt.timedelta) -> dt.datetime:
    seconds = int(step.total_seconds())
    epoch = int(moment.timestamp())
    return dt.datetime.fromtimestamp(epoch - epoch % seconds, tz=dt.UTC)


# --- graph series ----------------------------------------------------------------


def series(samples, range_name: str, now: dt.datetime | None = None) -> dict:
    """Columns for a graph (times in epoch seconds, one list per metric) over `range_name`.

    `samples` is a VMUsage or NodeUsage queryset already narrowed to one owner.
    A null is put where readings are missing, so the graph shows a gap, not a line.
    """
    bucket_seconds, span = RANGES[range_name]
    now = now or timezone.now()
    metrics = samples.model.METRICS
    rows = (
        samples.filter(bucket_seconds=bucket_seconds, at__gte=now - span)
        .order_by("at")
        .values_list("at", *metrics)
    )
    step = bucket_seconds or settings.KVMPANEL_STATS_INTERVAL
    columns = {"t": [], **{metric: [] for metric in metrics}}
    previous = None
    for at, *values in rows:
        moment = at.timestamp()
        if previous is not None and moment - previous > 2.5 * step:
            columns["t"].append(previous + step)
            for metric in metrics:
                columns[metric].append(None)
        columns["t"].append(moment)
        for metric, value in zip(metrics, values, strict=True):
            columns[metric].append(value)
        previous = moment
    start = now - span
    return {
        "range": range_name,
        "step": step,
        "from": start.timestamp(),
        "to": now.timestamp(),
        "series": columns,
        "first_point_at": None if columns["t"] else _first_point_at(samples, bucket_seconds, now),
    }


# Celery beat rolls readings up about this often (settings.CELERY_BEAT_SCHEDULE["maintain-usage"]).
ROLL_UP_EVERY = dt.timedelta(seconds=60)


def _first_point_at(samples, bucket_seconds: int, now: dt.datetime) -> float | None:
    """When a coarse range with no point yet (day, month) will show its first one: its first bucket
    ends, is waited out, and is rolled up. None when nothing is being collected to roll up."""
    if bucket_seconds == UsageSample.RAW:
        return None
    oldest = samples.filter(bucket_seconds__lt=bucket_seconds, at__gte=now - TIERS[0].keep).aggregate(
        first=Min("at")
    )["first"]
    if oldest is None:
        return None
    step = dt.timedelta(seconds=bucket_seconds)
    wait = dt.timedelta(seconds=settings.KVMPANEL_STATS_INTERVAL + 5)
    return max(_floor(oldest, step) + step + wait + ROLL_UP_EVERY, now).timestamp()
