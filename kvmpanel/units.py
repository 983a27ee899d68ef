"""Sizes as people read them, for pages and the backoffice alike."""


def gib(num_bytes: int) -> str:
    return f"{num_bytes / 1024**3:.1f} GiB"


def traffic(num_bytes: int) -> str:
    """Traffic as people read it: the largest binary unit that keeps the number at 1 or more."""
    value = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.2f} TiB"
