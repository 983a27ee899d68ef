"""SSH keys: what a pasted key must be, its fingerprint, and the keys pages for each of the cast."""

import base64
import functools
import re
import shutil
import subprocess

import pytest
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from django.core.exceptions import ValidationError
from django.db import IntegrityError
from django.test import Client
from django.urls import reverse

from accounts.forms import MAX_KEYS_PER_USER, AddSSHKeyForm
from accounts.models import SSHKey
from accounts.sshkeys import fingerprint, keys_of, parse_public_key

SSH_KEYGEN = shutil.which("ssh-keygen")


def openssh_line(private_key, comment: str = "") -> str:
    line = private_key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
    return f"{line} {comment}".strip()


@functools.cache
def ed25519_key(comment: str = "alice@laptop") -> str:
    return openssh_line(ed25519.Ed25519PrivateKey.generate(), comment)


@functools.cache
def ecdsa_key(curve_name: str) -> str:
    curve = {"nistp256": ec.SECP256R1(), "nistp384": ec.SECP384R1(), "nistp521": ec.SECP521R1()}[curve_name]
    return openssh_line(ec.generate_private_key(curve), f"ecdsa-{curve_name}")


@functools.cache
def rsa_key(bits: int) -> str:
    return openssh_line(rsa.generate_private_key(public_exponent=65537, key_size=bits), f"rsa-{bits}")


def key_data(line: str) -> str:
    return line.split()[1]


def refusal(text: str) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        parse_public_key(text)
    return caught.value


# --- Keys that are accepted -------------------------------------------------------------------

VALID_KEYS = {
    "ed25519": (lambda: ed25519_key(), "ssh-ed25519", 256),
    "ecdsa-p256": (lambda: ecdsa_key("nistp256"), "ecdsa-sha2-nistp256", 256),
    "ecdsa-p384": (lambda: ecdsa_key("nistp384"), "ecdsa-sha2-nistp384", 384),
    "ecdsa-p521": (lambda: ecdsa_key("nistp521"), "ecdsa-sha2-nistp521", 521),
    "rsa-2048": (lambda: rsa_key(2048), "ssh-rsa", 2048),
    "rsa-4096": (lambda: rsa_key(4096), "ssh-rsa", 4096),
}


@pytest.mark.parametrize("kind", VALID_KEYS)
def test_it_accepts_ed25519_ecdsa_and_rsa_keys(kind):
    make_line, key_type, bits = VALID_KEYS[kind]
    line = make_line()
    parsed = parse_public_key(line)
    assert parsed.key_type == key_type
    assert parsed.bits == bits
    assert parsed.public_key == line


@pytest.mark.parametrize("kind", VALID_KEYS)
def test_the_fingerprint_is_the_sha256_of_the_blob_without_padding(kind):
    line = VALID_KEYS[kind][0]()
    parsed = parse_public_key(line)
    blob = base64.b64decode(key_data(line))
    assert parsed.fingerprint == fingerprint(blob)
    assert parsed.fingerprint.startswith("SHA256:")
    assert len(parsed.fingerprint) == len("SHA256:") + 43
    assert "=" not in parsed.fingerprint


@pytest.mark.skipif(SSH_KEYGEN is None, reason="ssh-keygen is not installed")
@pytest.mark.parametrize("kind", VALID_KEYS)
def test_the_fingerprint_is_what_ssh_keygen_prints(kind, tmp_path):
    line = VALID_KEYS[kind][0]()
    key_file = tmp_path / "key.pub"
    key_file.write_text(line + "\n")
    printed = subprocess.run(
        [SSH_KEYGEN, "-lf", str(key_file)], capture_output=True, text=True, check=True
    ).stdout
    # "256 SHA256:… alice@laptop (ED25519)"
    assert parse_public_key(line).fingerprint == printed.split()[1]


def test_it_strips_surrounding_whitespace_and_blank_lines():
    line = ed25519_key()
    assert parse_public_key(f"\n  \t{line}  \r\n\n").public_key == line


def test_it_keeps_a_comment_with_spaces_and_joins_fields_with_one_space():
    data = key_data(ed25519_key())
    parsed = parse_public_key(f"ssh-ed25519\t{data}   alice on her laptop")
    assert parsed.comment == "alice on her laptop"
    assert parsed.public_key == f"ssh-ed25519 {data} alice on her laptop"


def test_a_key_without_a_comment_is_fine():
    line = openssh_line(ed25519.Ed25519PrivateKey.generate())
    parsed = parse_public_key(line)
    assert parsed.comment == ""
    assert parsed.public_key == line


def test_another_base64_spelling_of_the_same_key_gives_the_same_line_and_fingerprint():
    line = ecdsa_key("nistp256")
    data = key_data(line)  # 104 bytes: the last character before "=" has 2 unused bits
    assert data.endswith("=")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = data[-2]
    respelled = data[:-2] + alphabet[alphabet.index(last) | 1] + "="
    assert respelled != data
    assert base64.b64decode(respelled) == base64.b64decode(data)
    parsed = parse_public_key(f"ecdsa-sha2-nistp256 {respelled}")
    assert parsed.public_key == f"ecdsa-sha2-nistp256 {data}"
    assert parsed.fingerprint == parse_public_key(line).fingerprint


# --- Keys and text that are refused ---------------------------------------------------------


def test_it_refuses_an_openssh_private_key_and_says_so():
    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption()).decode()
    error = refusal(pem)
    assert error.code == "private_key"
    assert "private key" in error.message
    assert ".pub" in error.message


@pytest.mark.parametrize(
    "private_format", [PrivateFormat.PKCS8, PrivateFormat.TraditionalOpenSSL], ids=["pkcs8", "traditional"]
)
def test_it_refuses_pem_private_keys(private_format):
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(Encoding.PEM, private_format, NoEncryption()).decode()
    assert refusal(pem).code == "private_key"


def test_it_refuses_a_putty_private_key():
    assert refusal("PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\n").code == "private_key"


def test_it_refuses_more_than_one_line():
    error = refusal(f"{ed25519_key()}\n{ecdsa_key('nistp256')}")
    assert error.code == "multiple_lines"
    assert "one at a time" in error.message


@pytest.mark.parametrize("separator", ["\r", "\x0b", "\x0c", "\x85", "\u2028"])
def test_it_treats_every_line_break_as_a_second_line(separator):
    assert refusal(f"{ed25519_key()}{separator}{ed25519_key()}").code == "multiple_lines"


@pytest.mark.parametrize(
    "options",
    [
        'command="/bin/sh -c id"',
        "restrict",
        "no-pty",
        'from="10.0.0.0/8",no-agent-forwarding',
        'environment="LD_PRELOAD=/tmp/x.so"',
        'permitopen="localhost:22"',
        'cert-authority,principals="root"',
    ],
)
def test_it_refuses_authorized_keys_options_before_the_key_type(options):
    error = refusal(f"{options} {ed25519_key()}")
    assert error.code == "options"
    assert "options" in error.message


def test_it_refuses_an_unknown_option_before_a_key_too():
    assert refusal(f"frobnicate=yes {ed25519_key()}").code == "options"


@pytest.mark.parametrize("key_type", ["ssh-foo", "ecdsa-sha2-nistp999", "rsa-sha2-512"])
def test_it_refuses_unknown_key_types_and_names_the_supported_ones(key_type):
    error = refusal(f"{key_type} {key_data(ed25519_key())}")
    assert error.code == "unknown_type"
    assert f"“{key_type}”" in error.message
    assert "ssh-ed25519" in error.message


def test_it_does_not_echo_back_a_type_that_is_not_a_name():
    error = refusal("<script>alert(1)</script> AAAA")
    assert error.code == "unknown_type"
    assert "<script>" not in error.message


@pytest.mark.filterwarnings("ignore::cryptography.utils.CryptographyDeprecationWarning")
def test_it_refuses_dsa_keys():
    dsa_line = openssh_line(dsa.generate_private_key(key_size=1024))  # noqa: S505 (weak on purpose)
    error = refusal(dsa_line)
    assert error.code == "dsa"
    assert "ssh-keygen -t ed25519" in error.message


def test_it_refuses_rsa_keys_under_2048_bits():
    error = refusal(rsa_key(1024))
    assert error.code == "rsa_too_small"
    assert "1024 bits" in error.message
    assert "2048" in error.message


def test_it_refuses_rsa_keys_of_2047_bits():
    assert refusal(rsa_key(2047)).code == "rsa_too_small"


@pytest.mark.parametrize(
    "key_type",
    ["sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com"],
)
def test_it_refuses_security_keys_for_now(key_type):
    assert refusal(f"{key_type} AAAA").code == "security_key"


def test_it_refuses_certificates():
    assert refusal("ssh-ed25519-cert-v01@openssh.com AAAA").code == "certificate"


@pytest.mark.parametrize(
    "data",
    [
        "AAAA$$$$",
        "AAAAC3NzaC1lZDI1NTE5AAAAI",  # cut inside a quantum: padding missing
        "AAAAC3NzaC1l ZDI1",  # a space inside the data makes the rest a comment: still not a key
        "ÄÖÜ",
    ],
)
def test_it_refuses_bad_base64(data):
    assert refusal(f"ssh-ed25519 {data}").code in {"bad_base64", "corrupt"}


def test_it_says_the_base64_is_bad_when_it_is():
    error = refusal("ssh-ed25519 AAAA$$$$")
    assert error.code == "bad_base64"
    assert "base64" in error.message


def test_it_refuses_a_key_cut_short():
    data = key_data(ed25519_key())
    assert refusal(f"ssh-ed25519 {data[:-8]}").code == "corrupt"


def test_it_refuses_a_key_whose_data_is_another_type():
    assert refusal(f"ssh-rsa {key_data(ed25519_key())}").code == "corrupt"


def test_it_refuses_a_key_with_extra_bytes_after_it():
    blob = base64.b64decode(key_data(ed25519_key())) + b"\x00\x00\x00\x01x"
    assert refusal(f"ssh-ed25519 {base64.b64encode(blob).decode()}").code == "corrupt"


def test_it_refuses_a_type_without_key_data():
    assert refusal("ssh-ed25519").code == "incomplete"


@pytest.mark.parametrize(
    "comment",
    ["alice\x1b[2J", "alice\x00", "alice\x07bell", "alice\tlaptop", "alice\u202egnp.exe", "x\x7f"],
)
def test_it_refuses_a_comment_with_control_characters(comment):
    error = refusal(f"{ed25519_key()[: -len('alice@laptop')]}{comment}")
    assert error.code == "comment_control_characters"


def test_it_allows_unicode_letters_in_the_comment():
    line = f"{key_data(ed25519_key())} Zoë on the Straße"
    assert parse_public_key(f"ssh-ed25519 {line}").comment == "Zoë on the Straße"


def test_it_refuses_text_over_16_kib():
    error = refusal(f"{ed25519_key()} {'x' * 16 * 1024}")
    assert error.code == "too_long"
    assert "16 KiB" in error.message


@pytest.mark.parametrize("text", ["", "   ", "\n\n"])
def test_it_asks_for_a_key_when_given_nothing(text):
    assert refusal(text).code == "required"


def test_it_explains_how_to_convert_an_rfc4716_key():
    text = "---- BEGIN SSH2 PUBLIC KEY ----\nAAAAC3NzaC1lZDI1NTE5\n---- END SSH2 PUBLIC KEY ----"
    error = refusal(text)
    assert error.code == "rfc4716"
    assert "ssh-keygen -i" in error.message


def test_it_explains_how_to_convert_a_pem_public_key():
    pem = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    assert refusal(pem).code == "pem"


# --- The model and the form ---------------------------------------------------------------------


def add_key(user, line: str, name: str = "laptop") -> SSHKey:
    form = AddSSHKeyForm({"name": name, "public_key": line}, user=user)
    assert form.is_valid(), form.errors
    return form.save()


@pytest.mark.django_db
def test_the_form_stores_the_normalised_line_and_fingerprint(alice):
    line = ed25519_key()
    key = add_key(alice, f"  {line}\n")
    assert key.user == alice
    assert key.public_key == line
    assert key.fingerprint == parse_public_key(line).fingerprint
    assert key.key_type == "ssh-ed25519"
    assert key.type_label == "Ed25519"
    assert key.comment == "alice@laptop"


@pytest.mark.django_db
def test_the_same_key_twice_is_refused_by_name(alice):
    add_key(alice, ed25519_key(), name="laptop")
    form = AddSSHKeyForm({"name": "again", "public_key": ed25519_key()}, user=alice)
    assert not form.is_valid()
    assert form.errors["public_key"] == ["You have already added this key, as “laptop”."]


@pytest.mark.django_db
def test_the_same_key_with_another_comment_is_still_a_duplicate(alice):
    line = ed25519_key()
    add_key(alice, line)
    form = AddSSHKeyForm({"name": "x", "public_key": f"{line[: line.rindex(' ')]} other"}, user=alice)
    assert not form.is_valid()
    assert "already added this key" in form.errors["public_key"][0]


@pytest.mark.django_db
def test_two_customers_may_add_the_same_key(alice, bob):
    add_key(alice, ed25519_key())
    add_key(bob, ed25519_key())
    assert SSHKey.objects.count() == 2


@pytest.mark.django_db
def test_the_database_refuses_a_duplicate_too(alice):
    key = add_key(alice, ed25519_key())
    duplicate = SSHKey(user=alice, name="copy", public_key=key.public_key, fingerprint=key.fingerprint)
    with pytest.raises(ValidationError, match=re.escape("You have already added this key.")):
        duplicate.full_clean()
    with pytest.raises(IntegrityError):
        duplicate.save()


@pytest.mark.django_db
def test_a_duplicate_added_meanwhile_becomes_a_form_error(alice):
    form = AddSSHKeyForm({"name": "laptop", "public_key": ed25519_key()}, user=alice)
    assert form.is_valid()
    add_key(alice, ed25519_key(), name="other tab")
    assert form.save() is None
    assert form.errors["public_key"] == ["You have already added this key."]
    assert SSHKey.objects.count() == 1


@pytest.mark.django_db
def test_an_empty_name_takes_the_comment(alice):
    assert add_key(alice, ed25519_key(), name="").name == "alice@laptop"


@pytest.mark.django_db
def test_an_empty_name_and_no_comment_asks_for_a_name(alice):
    line = openssh_line(ed25519.Ed25519PrivateKey.generate())
    form = AddSSHKeyForm({"name": "", "public_key": line}, user=alice)
    assert not form.is_valid()
    assert "Give the key a name" in form.errors["name"][0]


@pytest.mark.django_db
def test_an_account_holds_a_bounded_number_of_keys(alice):
    SSHKey.objects.bulk_create(
        SSHKey(user=alice, name=f"k{n}", public_key="ssh-ed25519 AAAA", fingerprint=f"SHA256:{n}")
        for n in range(MAX_KEYS_PER_USER)
    )
    form = AddSSHKeyForm({"name": "one more", "public_key": ed25519_key()}, user=alice)
    assert not form.is_valid()
    assert "Delete one first" in form.non_field_errors()[0]


@pytest.mark.django_db
def test_keys_of_gives_only_the_users_own_keys_by_name(alice, bob):
    add_key(alice, ecdsa_key("nistp256"), name="work")
    add_key(alice, ed25519_key(), name="home")
    add_key(bob, rsa_key(2048), name="bobs")
    assert [key.name for key in keys_of(alice)] == ["home", "work"]
    assert [key.name for key in keys_of(bob)] == ["bobs"]


@pytest.mark.django_db
def test_keys_of_an_anonymous_user_is_empty():
    from django.contrib.auth.models import AnonymousUser

    assert list(keys_of(AnonymousUser())) == []


@pytest.mark.django_db
def test_deleting_a_user_deletes_their_keys(alice):
    add_key(alice, ed25519_key())
    alice.delete()
    assert not SSHKey.objects.exists()


# --- The pages -------------------------------------------------------------------------------------

KEYS_URL = "/accounts/keys/"


def delete_url(key: SSHKey) -> str:
    return reverse("ssh_key_delete", args=[key.pk])


@pytest.fixture
def alice_key(alice):
    return add_key(alice, ed25519_key(), name="alice laptop")


def test_the_keys_url_is_under_accounts():
    assert reverse("ssh_keys") == KEYS_URL


@pytest.mark.django_db
def test_the_owner_sees_their_keys_with_type_and_fingerprint(client, alice, alice_key):
    client.force_login(alice)
    page = client.get(KEYS_URL).content.decode()
    assert "alice laptop" in page
    assert "Ed25519" in page
    assert f'<div class="mono text-break my-1">{alice_key.fingerprint}</div>' in page
    assert delete_url(alice_key) in page


@pytest.mark.django_db
def test_the_list_shows_only_my_keys(client, alice, bob, alice_key):
    bobs = add_key(bob, rsa_key(2048), name="bobs secret key")
    client.force_login(alice)
    page = client.get(KEYS_URL).content.decode()
    assert bobs.name not in page
    assert bobs.fingerprint not in page


@pytest.mark.django_db
def test_the_owner_adds_a_key(client, alice):
    client.force_login(alice)
    response = client.post(KEYS_URL, {"name": "work", "public_key": ecdsa_key("nistp384")}, follow=True)
    key = SSHKey.objects.get()
    assert (key.user, key.name) == (alice, "work")
    assert response.redirect_chain == [(KEYS_URL, 302)]
    page = response.content.decode()
    assert "Added the key “work”" in page
    assert "ECDSA P-384" in page


@pytest.mark.django_db
def test_a_refused_key_shows_the_message_and_keeps_the_text(client, alice):
    client.force_login(alice)
    response = client.post(KEYS_URL, {"name": "old", "public_key": rsa_key(1024)})
    assert response.status_code == 200
    page = response.content.decode()
    assert "This RSA key has only 1024 bits" in page
    assert "is-invalid" in page
    assert key_data(rsa_key(1024)) in page  # the user can see what they pasted
    assert not SSHKey.objects.exists()


@pytest.mark.django_db
def test_a_pasted_private_key_is_not_sent_back(client, alice):
    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption()).decode()
    client.force_login(alice)
    page = client.post(KEYS_URL, {"name": "oops", "public_key": pem}).content.decode()
    assert "This is a private key" in page
    assert pem.splitlines()[1] not in page
    assert not SSHKey.objects.exists()


@pytest.mark.django_db
def test_a_comment_with_markup_is_escaped(client, alice):
    line = f"{ed25519_key()[: -len('alice@laptop')]}<img src=x onerror=alert(1)>"
    client.force_login(alice)
    client.post(KEYS_URL, {"name": "<b>bold</b>", "public_key": line})
    page = client.get(KEYS_URL).content.decode()
    assert "<img src=x" not in page
    assert "<b>bold</b>" not in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page


@pytest.mark.django_db
def test_the_delete_page_asks_first_and_deletes_on_post(client, alice, alice_key):
    client.force_login(alice)
    confirm = client.get(delete_url(alice_key))
    assert confirm.status_code == 200
    assert "Delete the key alice laptop?" in confirm.content.decode()
    assert SSHKey.objects.filter(pk=alice_key.pk).exists()
    response = client.post(delete_url(alice_key), follow=True)
    assert response.redirect_chain == [(KEYS_URL, 302)]
    assert "Deleted the key “alice laptop”." in response.content.decode()
    assert not SSHKey.objects.filter(pk=alice_key.pk).exists()


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["get", "post"])
def test_the_outsider_gets_404_on_another_users_key(client, bob, alice_key, method):
    client.force_login(bob)
    assert getattr(client, method)(delete_url(alice_key)).status_code == 404
    assert SSHKey.objects.filter(pk=alice_key.pk).exists()


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["get", "post"])
def test_staff_have_no_special_access_to_customers_keys(client, staff, alice_key, method):
    client.force_login(staff)
    assert getattr(client, method)(delete_url(alice_key)).status_code == 404
    assert SSHKey.objects.filter(pk=alice_key.pk).exists()


@pytest.mark.django_db
def test_staff_see_only_their_own_keys_on_the_page(client, staff, alice_key):
    client.force_login(staff)
    page = client.get(KEYS_URL).content.decode()
    assert alice_key.fingerprint not in page
    assert "No SSH keys yet" in page


@pytest.mark.django_db
def test_a_key_that_does_not_exist_is_404(client, alice):
    client.force_login(alice)
    assert client.get(reverse("ssh_key_delete", args=[999999])).status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "target"),
    [("get", "list"), ("post", "list"), ("get", "delete"), ("post", "delete")],
)
def test_anonymous_is_sent_to_sign_in(client, alice_key, method, target):
    url = KEYS_URL if target == "list" else delete_url(alice_key)
    data = {"name": "x", "public_key": ecdsa_key("nistp256")} if target == "list" else {}
    response = getattr(client, method)(url, data)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    assert list(SSHKey.objects.all()) == [alice_key]


@pytest.mark.django_db
def test_adding_and_deleting_need_csrf(alice, alice_key):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.post(KEYS_URL, {"name": "x", "public_key": ecdsa_key("nistp256")}).status_code == 403
    assert client.post(delete_url(alice_key)).status_code == 403
    assert list(SSHKey.objects.all()) == [alice_key]


@pytest.mark.django_db
def test_other_methods_are_refused(client, alice, alice_key):
    client.force_login(alice)
    assert client.delete(delete_url(alice_key)).status_code == 405
    assert client.put(KEYS_URL).status_code == 405
    assert SSHKey.objects.filter(pk=alice_key.pk).exists()


@pytest.mark.django_db
def test_the_navbar_links_to_the_keys_page_for_signed_in_users(client, alice):
    assert f'href="{KEYS_URL}"' not in client.get(reverse("login")).content.decode()
    client.force_login(alice)
    page = client.get(KEYS_URL).content.decode()
    assert f'<a class="nav-link active" href="{KEYS_URL}">SSH keys</a>' in page


# --- The backoffice -------------------------------------------------------------------------------


@pytest.fixture
def superuser(staff):
    staff.is_superuser = True
    staff.save()
    return staff


@pytest.mark.django_db
def test_the_backoffice_searches_keys_by_fingerprint_and_user(client, superuser, alice_key, bob):
    add_key(bob, rsa_key(2048), name="bobs")
    client.force_login(superuser)
    url = reverse("admin:accounts_sshkey_changelist")
    by_fingerprint = client.get(url, {"q": alice_key.fingerprint}).content.decode()
    assert "alice laptop" in by_fingerprint
    assert "bobs" not in by_fingerprint
    bob.email = "bob@example.test"
    bob.save()
    # By address: "@" and "." never occur in a fingerprint (base64), "bob" could (it once did).
    by_user = client.get(url, {"q": "bob@example.test"}).content.decode()
    assert "bobs" in by_user
    assert "alice laptop" not in by_user


@pytest.mark.django_db
def test_the_backoffice_shows_the_key_text_read_only(client, superuser, alice_key):
    client.force_login(superuser)
    page = client.get(reverse("admin:accounts_sshkey_change", args=[alice_key.pk])).content.decode()
    assert key_data(alice_key.public_key) in page
    assert 'name="public_key"' not in page
    assert 'name="fingerprint"' not in page
    assert 'name="name"' in page


@pytest.mark.django_db
def test_the_backoffice_does_not_add_keys_around_the_validation(client, superuser):
    client.force_login(superuser)
    assert client.get(reverse("admin:accounts_sshkey_add")).status_code == 403


@pytest.mark.django_db
def test_customers_cannot_reach_keys_in_the_backoffice(client, alice, alice_key):
    client.force_login(alice)
    response = client.get(reverse("admin:accounts_sshkey_changelist"))
    assert response.status_code == 302
    assert "login" in response["Location"]
