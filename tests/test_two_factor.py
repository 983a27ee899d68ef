"""Two-factor sign-in: setup, the code step that cannot be skipped, single use, recovery codes, staff."""

import time

import pytest
from django.core import mail
from django.urls import reverse
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts import twofactor
from accounts.models import AuditEntry

from .factories import make_user

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"


def code_now(device: TOTPDevice, steps_ahead: int = 0) -> str:
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = time.time() + steps_ahead * device.step
    return f"{totp.token():06d}"


def enable_2fa(client, user) -> tuple[TOTPDevice, list[str]]:
    """Go through the setup page as the user would; the device and the recovery codes shown."""
    client.force_login(user)
    page = client.get(reverse("two_factor_setup")).content.decode()
    device = TOTPDevice.objects.get(user=user, confirmed=False)
    assert "<svg" in page and twofactor.secret_text(device) in page
    response = client.post(reverse("two_factor_setup"), {"code": code_now(device)})
    codes = response.context["codes"]
    client.post(reverse("logout"))
    device.refresh_from_db()
    user.refresh_from_db()
    return device, codes


def password_step(client, user):
    return client.post(LOGIN, {"username": user.username, "password": f"{user.username}-pass-123"})


def test_setup_needs_a_right_code_and_shows_ten_recovery_codes_once(client, alice):
    client.force_login(alice)
    client.get(reverse("two_factor_setup"))
    response = client.post(reverse("two_factor_setup"), {"code": "000000"})
    assert "That code is not right" in response.content.decode()
    assert not twofactor.is_enabled(alice)
    time.sleep(1.1)  # django-otp makes the next try after a wrong code wait (1 s, then doubling)

    device, codes = enable_2fa(client, alice)
    assert device.confirmed and len(set(codes)) == 10
    assert twofactor.is_enabled(alice)
    assert not mail.outbox  # the secret never leaves by email
    assert AuditEntry.objects.filter(action="account.2fa_enable", owner=alice).exists()


def test_after_the_password_no_page_opens_until_the_code_is_given(client, alice, alice_vm):
    device, _ = enable_2fa(client, alice)
    response = password_step(client, alice)
    assert response.url == reverse("login_verify")
    for url in (reverse("vms:list"), alice_vm.get_absolute_url(), reverse("profile"), "/backoffice/"):
        skipped = client.get(url, follow=True)
        assert skipped.redirect_chain[-1][0].startswith(LOGIN), url
    assert "_auth_user_id" not in client.session

    response = client.post(reverse("login_verify"), {"code": code_now(device, steps_ahead=1)})
    assert response.url == reverse("vms:list")
    assert client.get(alice_vm.get_absolute_url()).status_code == 200


def test_a_code_works_once(client, alice):
    device, _ = enable_2fa(client, alice)
    code = code_now(device, steps_ahead=1)  # not the one setup used
    password_step(client, alice)
    assert client.post(reverse("login_verify"), {"code": code}).status_code == 302
    client.post(reverse("logout"))

    password_step(client, alice)
    response = client.post(reverse("login_verify"), {"code": code})
    assert "not right, or it was used already" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_a_recovery_code_signs_in_once(client, alice):
    _, codes = enable_2fa(client, alice)
    password_step(client, alice)
    response = client.post(reverse("login_verify"), {"code": codes[0].upper()}, follow=True)
    assert "You signed in with a recovery code; 9 left." in response.content.decode()
    client.post(reverse("logout"))

    password_step(client, alice)
    response = client.post(reverse("login_verify"), {"code": codes[0]})
    assert response.status_code == 200 and "_auth_user_id" not in client.session


def test_too_many_wrong_codes_send_back_to_the_password(client, alice):
    enable_2fa(client, alice)
    password_step(client, alice)
    for _ in range(5):
        response = client.post(reverse("login_verify"), {"code": "123456"})
    assert response.url == LOGIN
    assert client.get(reverse("login_verify")).url == LOGIN
    assert AuditEntry.objects.filter(action="account.login", outcome="refused", owner=alice).count() == 5


def test_the_code_step_expires(client, alice):
    device, _ = enable_2fa(client, alice)
    password_step(client, alice)
    session = client.session
    session["kvmpanel_pending_2fa"]["at"] -= 301
    session.save()
    assert client.post(reverse("login_verify"), {"code": code_now(device)}).url == LOGIN


def test_a_session_that_never_gave_the_code_is_ended(client, alice):
    """E.g. a session opened elsewhere before 2FA was turned on."""
    enable_2fa(client, alice)
    client.force_login(alice)  # signed in without the second factor
    response = client.get(reverse("vms:list"))
    assert response.status_code == 302 and response.url.startswith(LOGIN)
    assert "_auth_user_id" not in client.session


def test_staff_must_set_up_two_factor_before_anything_else(client, settings):
    settings.KVMPANEL_STAFF_2FA_REQUIRED = True
    operator = make_user("operator", is_staff=True, is_superuser=True)
    client.force_login(operator)
    for url in (reverse("vms:list"), "/backoffice/", reverse("profile")):
        assert client.get(url).url == reverse("two_factor_setup"), url
    assert client.get(reverse("two_factor_setup")).status_code == 200

    device, _ = enable_2fa(client, operator)
    password_step(client, operator)
    client.post(reverse("login_verify"), {"code": code_now(device, steps_ahead=1)})
    assert client.get("/backoffice/").status_code == 200
    assert client.get(reverse("two_factor_disable")).url == reverse("profile")  # staff keep it


def test_turning_it_off_asks_for_password_and_code(client, alice):
    device, _ = enable_2fa(client, alice)
    password_step(client, alice)
    client.post(reverse("login_verify"), {"code": code_now(device, steps_ahead=1)})
    session = client.session
    session["kvmpanel_confirmed_at"] = 0  # signed in a while ago
    session.save()

    response = client.get(reverse("two_factor_disable"))
    assert response.url.startswith(reverse("reauth"))
    confirm = client.get(response.url).content.decode()
    assert 'name="code"' in confirm
    response = client.post(
        reverse("reauth"),
        {
            "password": "alice-pass-123",
            "code": code_now(device, steps_ahead=2),
            "next": "/accounts/2fa/disable/",
        },
    )
    assert response.url == reverse("two_factor_disable")
    client.post(reverse("two_factor_disable"))
    alice.refresh_from_db()
    assert not twofactor.is_enabled(alice)
    assert client.get(reverse("vms:list")).status_code == 200  # this session goes on
    assert not TOTPDevice.objects.filter(user=alice).exists()


def test_new_recovery_codes_replace_the_old_ones(client, alice, sign_in_confirmed):
    _, old_codes = enable_2fa(client, alice)
    device = TOTPDevice.objects.get(user=alice)
    password_step(client, alice)
    client.post(reverse("login_verify"), {"code": code_now(device, steps_ahead=1)})
    new_codes = client.post(reverse("recovery_codes_new")).context["codes"]
    assert not set(new_codes) & set(old_codes)
    assert twofactor.verify(alice, new_codes[1]) is not None
    assert twofactor.verify(alice, old_codes[1]) is None


def test_turning_it_on_ends_the_users_other_sessions(client, alice):
    from django.test import Client

    other_browser = Client()
    other_browser.force_login(alice)
    assert other_browser.get(reverse("vms:list")).status_code == 200
    enable_2fa(client, alice)
    assert other_browser.get(reverse("vms:list")).url.startswith(LOGIN)
