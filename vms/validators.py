import re

from django.core.exceptions import ValidationError

# RFC 1123: labels of letters, digits and hyphens, 1-63 long, not starting or
# ending with a hyphen; at most 253 characters in all.
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def validate_hostname(value: str) -> None:
    if not value or len(value) > 253:
        raise ValidationError("A hostname has 1 to 253 characters.", code="hostname")
    bad = sorted(set(re.sub(r"[a-z0-9.-]", "", value)))
    if bad:
        shown = " ".join(repr(c) if c.strip() else "space" for c in bad)
        raise ValidationError(
            f"A hostname may use only letters, digits, hyphens and dots; not {shown}.", code="hostname"
        )
    labels = value.split(".")
    if any(not _LABEL.match(label) for label in labels):
        raise ValidationError(
            "Use letters, digits and hyphens, in dot-separated parts of 1 to 63 characters "
            "that do not start or end with a hyphen (e.g. web-1 or web-1.example.com).",
            code="hostname",
        )
    if labels[-1].isdigit():
        raise ValidationError("The last part of a hostname cannot be all digits.", code="hostname")
