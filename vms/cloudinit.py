"""cloud-init NoCloud seeds: a guest's first-boot settings as a small ISO built in Python.

The seed is a CD-ROM labelled "cidata" holding the three files cloud-init reads
on first boot: meta-data (instance id, hostname), user-data (the panel's
#cloud-config, plus the customer's own when given) and network-config.

Every YAML document is built from plain data with yaml.safe_dump, never by
formatting strings, so a hostname, key or hash can only ever be one YAML string:
it cannot add keys, list items or documents. Only the hash of a password reaches
the seed, never the password.
"""

import io
from dataclasses import dataclass
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import bcrypt
import pycdlib
import yaml
from django.conf import settings

MAX_USER_DATA_BYTES = 16 * 1024
CLOUD_CONFIG_HEADER = "#cloud-config"
SEED_LABEL = "cidata"  # NoCloud finds its seed by this volume label
# bcrypt only reads this many bytes of a password; longer ones would be silently cut.
MAX_PASSWORD_BYTES = 72

# How cloud-init merges the customer's cloud-config into ours (cloud-init
# merging docs; code in cloudinit/handlers/cloud_config.py and mergers/).
# Each part is merged into what the parts before it built, with the part's own
# merge rules: with `dict(no_replace)` a key we already set keeps our value
# (hostname, fqdn, system_info.default_user's name and password, ssh_pwauth,
# disable_root), while keys we did not set are added; `recurse_list` with
# `list(append)` makes a list both documents set (users, ssh_authorized_keys,
# runcmd, packages...) ours followed by theirs; `str()` never concatenates
# strings. Without the header cloud-init uses `dict(replace)`, and the
# customer's hostname or users would replace ours. The header is on both parts:
# cloud-init's code reads each part's own header, its docs describe the
# previous part's rules being used for the next; with both the result is the same.
MERGE_TYPE = "list(append)+dict(no_replace,recurse_list)+str()"
# Top-level keys a customer document may not carry: each would get past the merge rules.
_MERGE_RULES_ARE_OURS = "the panel decides how your cloud-config is combined with its own"
RESERVED_KEYS = {
    # Rules in the document itself are read before the part's header and win over it.
    "merge_how": _MERGE_RULES_ARE_OURS,
    "merge_type": _MERGE_RULES_ARE_OURS,
    # The legacy `user:` key is merged over system_info.default_user and would rename or relock it.
    "user": "it would replace the default user the panel sets up; add your own users under 'users:'",
}

# The network-config written when the spec has none: a YAML comment only, which
# cloud-init reads as "no network configuration given" and answers with its
# fallback: DHCP (IPv4) on the first NIC, matched by the MAC it reads in the
# guest and named as the guest named it. Why not a version 2 document matching
# `name: "e*"`: the image configures the network with ifupdown (cloud-init's
# "eni" renderer; no netplan), and cloud-init 22.4 (Debian 12) turns a v2
# ethernet into an ifupdown stanza named after the entry's key (or its
# set-name, or the name found by its MAC): a name glob is ignored, so the guest
# would get `iface <key> inet dhcp` for an interface that does not exist (seen
# booting the image: networking.service failed, no address). The predictable
# name itself (ens3, enp1s0...) depends on the PCI slot and the MAC is not known
# when the seed is built, hence the fallback (seen: `iface ens3 inet dhcp`, a lease).
# A caller that knows the MAC can pass a v2 document matching `macaddress`.
FALLBACK_NETWORK_CONFIG = (
    "# No network configuration: cloud-init's fallback applies (DHCP on the first NIC, by its MAC).\n"
)

# ISO 9660 names allow no "-" or lowercase; cloud-init reads the Rock Ridge names
# (Linux mounts) or the Joliet ones, which carry the real names.
_SEED_FILES = (
    ("meta-data", "/META_DATA.;1"),
    ("user-data", "/USER_DATA.;1"),
    ("network-config", "/NETWORK_CONFIG.;1"),
)


class UserDataError(ValueError):
    """Customer user-data the panel refuses; the message is meant for the customer."""


@dataclass(frozen=True)
class SeedSpec:
    """Everything a guest's first boot is told."""

    instance_id: str  # e.g. the VM's UUID, plus a suffix that changes on reinstall
    hostname: str  # already validated RFC 1123 by the caller; still never formatted into YAML by hand
    default_user: str  # the image's default login user, e.g. "debian"
    password_hash: str = ""  # crypt(3)-style hash from hash_password(); "" = no password login
    ssh_keys: tuple[str, ...] = ()  # OpenSSH public key lines, already validated by the caller
    user_data: str = ""  # optional customer cloud-config, already passed through validate_user_data()
    # cloud-init network-config: version 2, or {"config": "disabled"}; None = DHCP on the first NIC
    network_config: dict | None = None


# --- passwords -------------------------------------------------------------------


def hash_password(password: str) -> str:
    """A bcrypt ($2b$) hash for cloud-init's `hashed_passwd`; Debian 12's libxcrypt verifies it."""
    check_password(password)
    # The cost (settings.KVMPANEL_GUEST_PASSWORD_COST) is paid in the request, beside the node's work
    # (first_boot.py), and at every password login in the guest.
    rounds = settings.KVMPANEL_GUEST_PASSWORD_COST
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=rounds)).decode("ascii")


def check_password(password: str) -> None:
    """Raise ValueError (a message for the user) if bcrypt and the guest cannot take this password."""
    if not password:
        raise ValueError("The password is empty.")
    if "\0" in password:
        # crypt(3) in the guest stops at a NUL byte: the hash would never match what is typed.
        raise ValueError("The password may not contain a NUL character.")
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise ValueError(f"The password is too long: at most {MAX_PASSWORD_BYTES} bytes.")


# --- customer user-data ----------------------------------------------------------


def validate_user_data(text: str) -> str:
    """The customer's cloud-config, normalised (LF line ends, final newline); "" when blank.

    Raises UserDataError, whose message says what to fix.
    """
    if not text.strip():
        return ""
    text = _normalise(text)
    _check_size(text)
    _check_header(text)
    document = _parse(text)
    _check_mapping(document)
    _check_no_reserved_keys(document)
    return text


def _normalise(text: str) -> str:
    # A byte-order mark and CRLF line ends come from editors, not from intent.
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    return text if text.endswith("\n") else text + "\n"


def _check_size(text: str) -> None:
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise UserDataError("User data must be valid UTF-8 text.") from None
    if size > MAX_USER_DATA_BYTES:
        raise UserDataError(
            f"User data is too big: {size} bytes, the limit is {MAX_USER_DATA_BYTES} bytes "
            f"({MAX_USER_DATA_BYTES // 1024} KiB)."
        )


def _check_header(text: str) -> None:
    first_line = text.split("\n", 1)[0]
    if first_line != CLOUD_CONFIG_HEADER:
        raise UserDataError(
            f"User data must be a cloud-config document: its first line must be exactly "
            f"{CLOUD_CONFIG_HEADER!r} (scripts and other formats are not accepted)."
        )


def _parse(text: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise UserDataError(f"User data is not valid YAML: {_describe_yaml_error(error)}") from None


def _describe_yaml_error(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    if mark is None:
        return f"{problem}."
    return f"{problem} (line {mark.line + 1}, column {mark.column + 1})."


def _check_mapping(document) -> None:
    if not isinstance(document, dict):
        found = "nothing" if document is None else f"a {_yaml_kind(document)}"
        raise UserDataError(
            f"User data must be a YAML mapping of cloud-config keys (such as 'packages:' or "
            f"'runcmd:') after the {CLOUD_CONFIG_HEADER} line, but it holds {found}."
        )


def _yaml_kind(value) -> str:
    return "list" if isinstance(value, list) else "single value"


def _check_no_reserved_keys(document: dict) -> None:
    for key, reason in RESERVED_KEYS.items():
        if key in document:
            raise UserDataError(f"User data may not set '{key}': {reason}.")


# --- the seed --------------------------------------------------------------------


def build_seed_iso(spec: SeedSpec) -> bytes:
    """The NoCloud seed ISO (volume label "cidata"): meta-data, user-data and network-config."""
    documents = {
        "meta-data": _meta_data(spec),
        "user-data": _user_data(spec),
        "network-config": _network_config(spec),
    }
    return _iso({name: text.encode() for name, text in documents.items()})


def _dump(data) -> str:
    # No line folding: a long key stays on one line (folding would be valid YAML, just hard to read).
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1 << 16)


def _meta_data(spec: SeedSpec) -> str:
    return _dump({"instance-id": spec.instance_id, "local-hostname": spec.hostname})


def _panel_cloud_config(spec: SeedSpec) -> dict:
    """What the panel itself tells the guest: hostname, default user, password, SSH keys."""
    config = {**_hostname_config(spec.hostname), **_user_config(spec), **_quiet_console()}
    if spec.ssh_keys:
        # Top-level keys go to the default user (cloud-init's ssh module).
        config["ssh_authorized_keys"] = list(spec.ssh_keys)
    if spec.network_config is not None:
        # Apply the seed's network-config at every boot, not only the first: addresses staff add or
        # remove later reach the guest with a rebuilt seed at its next start (same instance id).
        config["updates"] = {"network": {"when": ["boot-new-instance", "boot"]}}
    return config


def _quiet_console() -> dict:
    """The serial console is where the customer logs in: cloud-init's own messages go to its log file
    only (Debian's cloud-init units copy their output to the console, where it cut through the
    login prompt and what the customer typed), and the kernel prints only errors there. Both are
    still in the guest's logs (/var/log/cloud-init-output.log, dmesg)."""
    return {
        "output": {"all": ">> /var/log/cloud-init-output.log"},
        "bootcmd": [["sysctl", "-w", "kernel.printk=3 4 1 3"]],
    }


def _hostname_config(hostname: str) -> dict:
    short_name, dot, _domain = hostname.partition(".")
    config = {"hostname": short_name}
    if dot:
        config["fqdn"] = hostname
    # Debian's convention: /etc/hostname holds the short name, /etc/hosts maps the FQDN to it.
    config.update({"preserve_hostname": False, "manage_etc_hosts": True})
    return config


def _user_config(spec: SeedSpec) -> dict:
    # The default user is set in system_info.default_user: cloud-init merges it over
    # the image's own (keeping its groups, sudo and shell), and it wins over any
    # `users:` entry of the same name that the customer's document may add.
    default_user = {"name": spec.default_user, "lock_passwd": not spec.password_hash}
    if spec.password_hash:
        # hashed_passwd, not `password:`/`chpasswd`: those treat a $2b$ hash as a clear password.
        default_user["hashed_passwd"] = spec.password_hash
    return {
        "users": ["default"],
        "system_info": {"default_user": default_user},
        "ssh_pwauth": bool(spec.password_hash),
        "disable_root": True,
    }


def _user_data(spec: SeedSpec) -> str:
    ours = f"{CLOUD_CONFIG_HEADER}\n{_dump(_panel_cloud_config(spec))}"
    if not spec.user_data:
        return ours
    return _multipart([("kvmpanel.cfg", ours), ("customer.cfg", spec.user_data)])


def _multipart(parts: list[tuple[str, str]]) -> str:
    """A MIME multipart user-data; cloud-init merges its cloud-config parts in order."""
    message = MIMEMultipart()
    for filename, text in parts:
        part = MIMEText(text, "cloud-config", "utf-8")
        part.add_header("Content-Disposition", "attachment", filename=filename)
        part["Merge-Type"] = MERGE_TYPE
        message.attach(part)
    return message.as_string()


def _network_config(spec: SeedSpec) -> str:
    if spec.network_config is None:
        return FALLBACK_NETWORK_CONFIG
    return _dump(spec.network_config)


def _iso(files: dict[str, bytes]) -> bytes:
    iso = pycdlib.PyCdlib()
    # Rock Ridge for Linux mounts, Joliet for blkid and others; both carry the lowercase names.
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=SEED_LABEL)
    for name, iso9660_path in _SEED_FILES:
        content = files[name]
        iso.add_fp(io.BytesIO(content), len(content), iso9660_path, rr_name=name, joliet_path=f"/{name}")
    output = io.BytesIO()
    iso.write_fp(output)
    iso.close()
    return output.getvalue()
