"""The NoCloud seed: read back with pycdlib, YAML parsed back, never trusted as text.

No database: these are pure functions.
"""

import email
import io
import os
import subprocess
import sys

import bcrypt
import pycdlib
import pytest
import yaml

from vms import cloudinit
from vms.cloudinit import SeedSpec, UserDataError, build_seed_iso, hash_password, validate_user_data

PASSWORD = "correct horse battery staple"
PANEL_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTestsOnlyFakeKeyForTestsOnly00 alice@laptop"
HOSTILE = "x\"; rm -rf / #\n{evil: [1]}\nhostname: evil\n--- !!python/object:os.system ['id']"
SEED_FILES = ("meta-data", "user-data", "network-config")


@pytest.fixture(scope="module")
def password_hash() -> str:
    """One hash at the real cost for the whole module."""
    return hash_password(PASSWORD)


def make_spec(**overrides) -> SeedSpec:
    fields = {"instance_id": "5f0c-uuid-1", "hostname": "web1", "default_user": "debian"}
    return SeedSpec(**{**fields, **overrides})


def open_iso(data: bytes) -> pycdlib.PyCdlib:
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(data))
    return iso


def read_file(iso: pycdlib.PyCdlib, **path) -> str:
    out = io.BytesIO()
    iso.get_file_from_iso_fp(out, **path)
    return out.getvalue().decode()


def seed_files(spec: SeedSpec) -> dict[str, str]:
    iso = open_iso(build_seed_iso(spec))
    try:
        return {name: read_file(iso, rr_path=f"/{name}") for name in SEED_FILES}
    finally:
        iso.close()


def cloud_config(text: str) -> dict:
    assert text.startswith("#cloud-config\n")
    return yaml.safe_load(text)


def user_data_parts(text: str) -> list:
    message = email.message_from_string(text)
    assert message.is_multipart()
    return message.get_payload()


# --- the ISO itself -------------------------------------------------------------------


def test_it_labels_the_volume_cidata():
    iso = open_iso(build_seed_iso(make_spec()))
    assert iso.pvd.volume_identifier.decode().rstrip() == "cidata"
    # blkid reports the Joliet label when there is one: it must be cidata too.
    assert iso.joliet_vd.volume_identifier.decode("utf-16-be").rstrip() == "cidata"


def test_it_holds_the_three_files_under_their_rock_ridge_and_joliet_names():
    iso = open_iso(build_seed_iso(make_spec()))
    rock_ridge = sorted(child.rock_ridge.name().decode() for child in _children(iso, rr_path="/"))
    joliet = sorted(child.file_identifier().decode("utf-16-be") for child in _children(iso, joliet_path="/"))
    assert rock_ridge == sorted(SEED_FILES)
    assert joliet == sorted(SEED_FILES)
    for name in SEED_FILES:
        assert read_file(iso, rr_path=f"/{name}") == read_file(iso, joliet_path=f"/{name}")


def _children(iso: pycdlib.PyCdlib, **path) -> list:
    return [
        child
        for child in iso.list_children(**path)
        if not (child.is_dot() or child.is_dotdot())  # the directory's own "." and ".." entries
    ]


# --- meta-data and our cloud-config ----------------------------------------------------


def test_meta_data_names_the_instance_and_the_host():
    meta = yaml.safe_load(seed_files(make_spec(hostname="web1.example.com"))["meta-data"])
    assert meta == {"instance-id": "5f0c-uuid-1", "local-hostname": "web1.example.com"}


def test_it_sets_the_hostname_and_the_fqdn_when_the_name_has_a_dot():
    config = cloud_config(seed_files(make_spec(hostname="web1.example.com"))["user-data"])
    assert config["hostname"] == "web1"
    assert config["fqdn"] == "web1.example.com"
    assert config["preserve_hostname"] is False
    assert config["manage_etc_hosts"] is True


def test_it_sets_no_fqdn_for_a_short_hostname():
    config = cloud_config(seed_files(make_spec(hostname="web1"))["user-data"])
    assert config["hostname"] == "web1"
    assert "fqdn" not in config


def test_it_unlocks_the_default_user_with_the_password_hash(password_hash):
    config = cloud_config(seed_files(make_spec(password_hash=password_hash))["user-data"])
    assert config["users"] == ["default"]
    user = config["system_info"]["default_user"]
    assert user["name"] == "debian"
    assert user["lock_passwd"] is False
    assert bcrypt.checkpw(PASSWORD.encode(), user["hashed_passwd"].encode())
    assert config["ssh_pwauth"] is True
    assert config["disable_root"] is True


def test_without_a_password_the_user_stays_locked_and_ssh_refuses_passwords():
    config = cloud_config(seed_files(make_spec())["user-data"])
    assert config["system_info"]["default_user"] == {"name": "debian", "lock_passwd": True}
    assert config["ssh_pwauth"] is False
    assert config["disable_root"] is True


def test_it_gives_the_ssh_keys_to_the_default_user():
    second = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQFake bob@desk"
    config = cloud_config(seed_files(make_spec(ssh_keys=(PANEL_KEY, second)))["user-data"])
    assert config["ssh_authorized_keys"] == [PANEL_KEY, second]


def test_cloud_init_and_the_kernel_keep_off_the_serial_console_where_the_customer_logs_in():
    config = cloud_config(seed_files(make_spec())["user-data"])
    assert config["output"] == {"all": ">> /var/log/cloud-init-output.log"}
    assert ["sysctl", "-w", "kernel.printk=3 4 1 3"] in config["bootcmd"]


def test_it_writes_no_key_list_without_keys():
    assert "ssh_authorized_keys" not in cloud_config(seed_files(make_spec())["user-data"])


def test_the_clear_password_never_reaches_the_iso(password_hash):
    spec = make_spec(
        password_hash=password_hash, user_data=validate_user_data("#cloud-config\nruncmd: [id]\n")
    )
    data = build_seed_iso(spec)
    assert PASSWORD.encode() not in data
    assert PASSWORD.encode("utf-16-be") not in data
    user_data = seed_files(spec)["user-data"]
    decoded = b"".join(part.get_payload(decode=True) for part in user_data_parts(user_data))
    assert PASSWORD.encode() not in decoded
    assert password_hash.encode() in decoded  # the hash, and only the hash, is there


def test_hostile_names_keys_and_ids_stay_inert_data():
    spec = make_spec(
        instance_id=HOSTILE, hostname=HOSTILE, default_user=HOSTILE, ssh_keys=(HOSTILE, PANEL_KEY)
    )
    files = seed_files(spec)
    meta = yaml.safe_load(files["meta-data"])
    assert meta == {"instance-id": HOSTILE, "local-hostname": HOSTILE}
    config = cloud_config(files["user-data"])
    assert set(config) == {
        "hostname",
        "fqdn",  # HOSTILE has a dot in "!!python/object:os.system"
        "preserve_hostname",
        "manage_etc_hosts",
        "users",
        "system_info",
        "ssh_pwauth",
        "disable_root",
        "ssh_authorized_keys",
        "output",
        "bootcmd",
    }
    assert config["hostname"] == HOSTILE.partition(".")[0]
    assert config["fqdn"] == HOSTILE
    assert config["system_info"] == {"default_user": {"name": HOSTILE, "lock_passwd": True}}
    assert config["ssh_authorized_keys"] == [HOSTILE, PANEL_KEY]
    assert config["ssh_pwauth"] is False


@pytest.mark.parametrize("hostname", ["123", "yes", "off", "null", "0x1f", "1e3", "2024-01-02"])
def test_hostnames_that_yaml_would_read_as_other_types_stay_strings(hostname):
    files = seed_files(make_spec(hostname=hostname))
    assert yaml.safe_load(files["meta-data"])["local-hostname"] == hostname
    assert cloud_config(files["user-data"])["hostname"] == hostname


# --- the customer's cloud-config ------------------------------------------------------


def test_without_customer_user_data_the_user_data_is_our_cloud_config_alone():
    user_data = seed_files(make_spec())["user-data"]
    assert user_data.startswith("#cloud-config\n")
    assert "Content-Type" not in user_data


def test_customer_user_data_comes_second_in_a_multipart_that_merges_into_ours():
    customer = validate_user_data(
        "#cloud-config\nhostname: theirs\npackages: [htop]\nruncmd:\n  - [touch, /x]\n"
    )
    user_data = seed_files(make_spec(ssh_keys=(PANEL_KEY,), user_data=customer))["user-data"]
    ours, theirs = user_data_parts(user_data)
    for part in (ours, theirs):
        assert part.get_content_type() == "text/cloud-config"
        assert part["Merge-Type"] == "list(append)+dict(no_replace,recurse_list)+str()"
    assert cloud_config(ours.get_payload(decode=True).decode())["hostname"] == "web1"
    assert cloud_config(ours.get_payload(decode=True).decode())["ssh_authorized_keys"] == [PANEL_KEY]
    assert theirs.get_payload(decode=True).decode() == customer


# --- network-config -------------------------------------------------------------------


def test_by_default_the_network_config_leaves_cloud_init_its_dhcp_fallback():
    text = seed_files(make_spec())["network-config"]
    # A comment only: cloud-init reads "no network config given" and configures
    # DHCP on the first NIC itself (see FALLBACK_NETWORK_CONFIG for why).
    assert text.startswith("#")
    assert yaml.safe_load(text) is None


def test_a_given_network_config_is_written_as_yaml():
    network = {
        "version": 2,
        "ethernets": {
            "nic0": {"match": {"macaddress": "52:54:00:12:34:56"}, "set-name": "eth0", "dhcp4": True}
        },
    }
    assert yaml.safe_load(seed_files(make_spec(network_config=network))["network-config"]) == network


# --- validate_user_data ---------------------------------------------------------------


def test_it_accepts_a_cloud_config_mapping_and_normalises_line_ends():
    text = "\ufeff#cloud-config\r\npackages:\r\n  - htop\r\nruncmd: [[touch, /x]]"
    assert validate_user_data(text) == "#cloud-config\npackages:\n  - htop\nruncmd: [[touch, /x]]\n"


def test_blank_user_data_means_none():
    assert validate_user_data("") == ""
    assert validate_user_data("  \n\n") == ""


def test_it_accepts_user_data_of_exactly_the_limit():
    text = "#cloud-config\nruncmd: [x]\n"
    text += "#" * (cloudinit.MAX_USER_DATA_BYTES - len(text) - 1) + "\n"
    assert len(text.encode()) == cloudinit.MAX_USER_DATA_BYTES
    assert validate_user_data(text) == text


def test_it_refuses_user_data_over_the_limit_and_says_the_limit():
    text = "#cloud-config\nruncmd: [x]\n# é" + "é" * (8 * 1024)  # counted in UTF-8 bytes, not characters
    with pytest.raises(UserDataError, match=r"too big: \d+ bytes, the limit is 16384 bytes \(16 KiB\)"):
        validate_user_data(text)


@pytest.mark.parametrize(
    "text",
    [
        "#!/bin/sh\necho hi\n",
        "runcmd: [x]\n",
        "#cloud-config-jsonp\n[]\n",
        "#cloud-config \nruncmd: [x]\n",
        "\n#cloud-config\nruncmd: [x]\n",
        "#include\nhttp://example.com/x\n",
    ],
)
def test_it_refuses_user_data_that_does_not_start_with_cloud_config(text):
    with pytest.raises(UserDataError, match="first line must be exactly '#cloud-config'"):
        validate_user_data(text)


def test_it_refuses_invalid_yaml_and_says_the_line():
    with pytest.raises(UserDataError, match=r"not valid YAML: .*\(line 4, column \d+\)") as refused:
        validate_user_data("#cloud-config\npackages:\n  - htop\n runcmd: [x\n")
    assert isinstance(refused.value, ValueError)


def test_it_refuses_python_tags_as_a_yaml_error():
    with pytest.raises(UserDataError, match=r"not valid YAML: .*line 2"):
        validate_user_data("#cloud-config\nx: !!python/object/apply:os.system ['id']\n")


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("#cloud-config\n- packages\n- runcmd\n", "a list"),
        ("#cloud-config\njust a sentence\n", "a single value"),
        ("#cloud-config\n", "nothing"),
        ("#cloud-config\n# only a comment\n", "nothing"),
    ],
)
def test_it_refuses_user_data_that_is_not_a_mapping(text, found):
    with pytest.raises(UserDataError, match=f"must be a YAML mapping .* but it holds {found}"):
        validate_user_data(text)


@pytest.mark.parametrize("key", ["merge_how", "merge_type"])
def test_it_refuses_merge_rules_that_would_let_the_customer_replace_ours(key):
    with pytest.raises(UserDataError, match=f"may not set '{key}': the panel decides how"):
        validate_user_data(f"#cloud-config\n{key}: dict(replace)+list()+str()\nhostname: theirs\n")


def test_it_refuses_the_legacy_user_key_that_would_replace_the_default_user():
    with pytest.raises(UserDataError, match="may not set 'user': it would replace the default user"):
        validate_user_data("#cloud-config\nuser: {name: root, lock_passwd: false}\n")


def test_it_accepts_users_of_the_customers_own():
    text = "#cloud-config\nusers:\n  - default\n  - name: carol\n    shell: /bin/bash\n"
    assert validate_user_data(text) == text


def test_it_refuses_text_that_is_not_utf8():
    with pytest.raises(UserDataError, match="valid UTF-8"):
        validate_user_data("#cloud-config\nx: '\udcff'\n")


# --- hash_password --------------------------------------------------------------------


def test_it_hashes_with_bcrypt_2b_at_the_configured_cost(settings, password_hash):
    assert password_hash.startswith(f"$2b${settings.KVMPANEL_GUEST_PASSWORD_COST:02d}$")
    assert bcrypt.checkpw(PASSWORD.encode(), password_hash.encode())


def test_it_salts_every_hash(settings, password_hash):
    settings.KVMPANEL_GUEST_PASSWORD_COST = 4  # the cost is not what this test is about
    assert hash_password(PASSWORD) != hash_password(PASSWORD)


def test_it_accepts_a_password_of_72_bytes(settings):
    settings.KVMPANEL_GUEST_PASSWORD_COST = 4
    password = "é" * 36  # 72 bytes in UTF-8
    assert bcrypt.checkpw(password.encode(), hash_password(password).encode())


@pytest.mark.parametrize(
    ("password", "message"),
    [("", "empty"), ("a\0b", "NUL"), ("é" * 37, "at most 72 bytes")],
)
def test_it_refuses_passwords_it_cannot_hash_faithfully(password, message):
    with pytest.raises(ValueError, match=message):
        hash_password(password)


@pytest.mark.parametrize("cost", ["8", "17", "4"])
def test_a_guest_password_cost_out_of_bounds_stops_the_panel_from_starting(cost):
    result = subprocess.run(
        [sys.executable, "-c", "import kvmpanel.settings"],
        env={**os.environ, "KVMPANEL_GUEST_PASSWORD_COST": cost},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "KVMPANEL_GUEST_PASSWORD_COST must be between 9 and 16" in result.stderr
