"""SSH public keys: parsing what customers paste, fingerprints, and the keys a user has.

The one place that decides what a valid key is. Keys end up in VMs'
authorized_keys, so anything that could widen access there (options such as
command="…", a second line, a private key pasted by mistake) is refused with a
message that says what to paste instead.
"""

import base64
import binascii
import hashlib
import re
import unicodedata
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_ssh_public_key
from django.core.exceptions import ValidationError
from django.db.models import QuerySet

from .models import SSH_KEY_TYPE_LABELS, SSHKey

MAX_KEY_BYTES = 16 * 1024  # an RSA-16384 public key is about 2.8 KiB; more is not a key
MIN_RSA_BITS = 2048
SUPPORTED_TYPES = tuple(SSH_KEY_TYPE_LABELS)
SUPPORTED_TEXT = "ssh-ed25519, ecdsa-sha2-nistp256/384/521 and ssh-rsa (2048 bits or more)"

# authorized_keys options (sshd(8), AUTHORIZED_KEYS FILE FORMAT), to recognise a pasted options prefix.
_AUTHORIZED_KEYS_OPTIONS = {
    "agent-forwarding",
    "cert-authority",
    "command",
    "environment",
    "expiry-time",
    "from",
    "no-agent-forwarding",
    "no-port-forwarding",
    "no-pty",
    "no-touch-required",
    "no-user-rc",
    "no-x11-forwarding",
    "permitlisten",
    "permitopen",
    "port-forwarding",
    "principals",
    "pty",
    "restrict",
    "tunnel",
    "user-rc",
    "verify-required",
    "x11-forwarding",
}
# A key type followed by key data somewhere after the start of the line: the start was options.
_KEY_LATER_IN_LINE = re.compile(r"[\s,\"](?:ssh|ecdsa|sk)-[\w@.-]+[ \t]+AAAA")
_PLAUSIBLE_TYPE = re.compile(r"^[a-z0-9][a-z0-9@.-]{0,63}$")
_FIELD_SEPARATOR = re.compile(r"[ \t]+")


@dataclass(frozen=True)
class ParsedKey:
    key_type: str
    bits: int
    comment: str
    public_key: str  # the normalised line: "<type> <base64> [comment]"
    fingerprint: str


def keys_of(user) -> QuerySet[SSHKey]:
    """The SSH keys this user may choose from (their own, by name); none for anonymous users."""
    if user is None or not user.is_authenticated:
        return SSHKey.objects.none()
    return SSHKey.objects.filter(user=user)


def fingerprint(blob: bytes) -> str:
    """The SHA-256 fingerprint of a key blob, exactly as `ssh-keygen -l` prints it."""
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def parse_public_key(text: str) -> ParsedKey:
    """The key in `text` (one OpenSSH public key line), or ValidationError saying what is wrong."""
    text = text.strip()
    _refuse_wrong_kind_of_text(text)
    key_type, key_data, comment = _split_fields(text)
    _check_key_type(key_type, text)
    blob = _decode_key_data(key_data)
    bits = _load_and_measure(key_type, blob)
    _check_comment(comment)
    # Re-encoded: base64 has more than one spelling of the same bytes (the unused bits at the end).
    line = " ".join(part for part in (key_type, base64.b64encode(blob).decode("ascii"), comment) if part)
    return ParsedKey(key_type, bits, comment, line, fingerprint(blob))


def _refuse_wrong_kind_of_text(text: str) -> None:
    """Empty, too big, a private key, another file format, or several lines."""
    if not text:
        raise ValidationError("Paste your public key.", code="required")
    # Checked before the size so that a pasted private key always gets the warning it deserves.
    if "PRIVATE KEY" in text or "PuTTY-User-Key-File" in text:
        raise ValidationError(
            "This is a private key: keep it secret and never paste it into a website. "
            "Paste the public key instead, the contents of the .pub file (e.g. ~/.ssh/id_ed25519.pub).",
            code="private_key",
        )
    if len(text.encode("utf-8")) > MAX_KEY_BYTES:
        raise ValidationError(
            "This is too long for an SSH public key (the limit is 16 KiB).", code="too_long"
        )
    if "BEGIN SSH2 PUBLIC KEY" in text:
        raise ValidationError(
            "This key is in the SSH2 (RFC 4716) format. Convert it to one line with "
            "ssh-keygen -i -f key.pub and paste the result.",
            code="rfc4716",
        )
    if "BEGIN PUBLIC KEY" in text or "BEGIN RSA PUBLIC KEY" in text:
        raise ValidationError(
            "This is a PEM public key. Convert it to the OpenSSH format with "
            "ssh-keygen -i -m PKCS8 -f key.pem and paste the result.",
            code="pem",
        )
    # splitlines() also breaks on \v, \f, \x1c-\x1e, \x85 and U+2028/2029, which would end a line
    # for some readers of authorized_keys too.
    if len(text.splitlines()) > 1:
        raise ValidationError(
            "Paste one key, on a single line. To add several keys, add them one at a time.",
            code="multiple_lines",
        )


def _split_fields(line: str) -> tuple[str, str, str]:
    """<type> <base64> [comment]; sshd separates fields with spaces and tabs only."""
    fields = _FIELD_SEPARATOR.split(line, maxsplit=2)
    key_type = fields[0]
    key_data = fields[1] if len(fields) > 1 else ""
    comment = fields[2] if len(fields) > 2 else ""
    return key_type, key_data, comment


def _check_key_type(key_type: str, line: str) -> None:
    if key_type in SUPPORTED_TYPES:
        return
    if key_type == "ssh-dss":
        raise ValidationError(
            "DSA (ssh-dss) keys are no longer safe and current OpenSSH refuses them. "
            "Make a new key with ssh-keygen -t ed25519.",
            code="dsa",
        )
    if key_type.endswith("-cert-v01@openssh.com"):
        raise ValidationError(
            "This is an OpenSSH certificate, not a key. Paste the public key it was issued for.",
            code="certificate",
        )
    if key_type.startswith("sk-"):
        raise ValidationError(
            f"Security-key (FIDO) keys are not supported yet. Use one of: {SUPPORTED_TEXT}.",
            code="security_key",
        )
    if _starts_with_options(key_type, line):
        raise ValidationError(
            'Remove the authorized_keys options before the key type (such as command="…", from="…" '
            "or restrict): paste the key alone, starting with its type, e.g. ssh-ed25519.",
            code="options",
        )
    if _PLAUSIBLE_TYPE.match(key_type):
        raise ValidationError(
            f"Unknown key type “{key_type}”. Supported: {SUPPORTED_TEXT}.", code="unknown_type"
        )
    # Not echoed back: it may be anything at all.
    raise ValidationError(
        "This does not look like an SSH public key. A public key is one line that starts with its "
        "type, e.g. ssh-ed25519 AAAAC3Nza… you@laptop.",
        code="unknown_type",
    )


def _starts_with_options(first_field: str, line: str) -> bool:
    first_option = first_field.split(",", 1)[0].split("=", 1)[0].lower()
    return first_option in _AUTHORIZED_KEYS_OPTIONS or bool(_KEY_LATER_IN_LINE.search(line))


def _decode_key_data(key_data: str) -> bytes:
    if not key_data:
        raise ValidationError(
            "The key data is missing: a public key reads <type> <base64 data> [comment].", code="incomplete"
        )
    try:
        # validate=True: refuse characters outside the alphabet instead of silently skipping them.
        return base64.b64decode(key_data, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError(
            "The key data is not valid base64. Was it cut short or changed while copying? "
            "Copy the whole line from the .pub file again.",
            code="bad_base64",
        ) from None


def _load_and_measure(key_type: str, blob: bytes) -> int:
    """The key's size in bits, after cryptography has parsed the blob and it proved canonical."""
    damaged = ValidationError(
        f"The key data is damaged or is not a {key_type} key. Copy the whole line from the .pub file again.",
        code="corrupt",
    )
    line = key_type.encode("ascii") + b" " + base64.b64encode(blob)
    try:
        key = load_ssh_public_key(line)
    except (ValueError, UnsupportedAlgorithm):
        raise damaged from None
    # The fingerprint and the duplicate check hash the blob as pasted: it must be the one encoding
    # of this key that OpenSSH writes, or one key could be stored twice under two fingerprints.
    canonical = key.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).split(b" ")[1]
    if base64.b64decode(canonical) != blob:
        raise damaged
    if isinstance(key, rsa.RSAPublicKey):
        _check_rsa_size(key.key_size)
        return key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        return key.curve.key_size
    return 256  # Ed25519


def _check_rsa_size(bits: int) -> None:
    if bits < MIN_RSA_BITS:
        raise ValidationError(
            f"This RSA key has only {bits} bits; the panel needs at least {MIN_RSA_BITS}. "
            "Make a new key with ssh-keygen -t ed25519.",
            code="rsa_too_small",
        )


def _check_comment(comment: str) -> None:
    # Control and invisible formatting characters (escape codes, bidi overrides) could make the
    # line mean or look like something else wherever it is shown or written.
    if any(unicodedata.category(char).startswith("C") for char in comment):
        raise ValidationError(
            "The comment after the key contains control or invisible characters (such as tabs or "
            "escape codes); remove them.",
            code="comment_control_characters",
        )
