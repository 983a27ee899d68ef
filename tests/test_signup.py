"""Sign-up with email confirmation, changing the address, and resetting a forgotten password."""

import re

import pytest
from django.core import mail
from django.urls import reverse

from accounts.models import AuditEntry, User

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"
NEW_PASSWORD = "violet-harbour-lantern-42"


def link_in(message) -> str:
    return re.search(r"http://testserver(/\S+)", message.body).group(1)


def sign_up(client, username="carol", email="carol@example.com"):
    return client.post(
        reverse("signup"),
        {"username": username, "email": email, "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )


def test_a_new_account_signs_in_only_after_opening_the_emailed_link(client):
    response = sign_up(client)
    assert "We sent a link to <strong>carol@example.com</strong>" in response.content.decode()
    carol = User.objects.get(username="carol")
    assert not carol.email_confirmed and not carol.is_staff

    response = client.post(LOGIN, {"username": "carol", "password": NEW_PASSWORD})
    assert "Please confirm your email address first" in response.content.decode()
    assert "_auth_user_id" not in client.session

    (message,) = mail.outbox
    assert message.to == ["carol@example.com"]
    response = client.get(link_in(message), follow=True)
    assert "Your address carol@example.com is confirmed." in response.content.decode()
    assert client.post(LOGIN, {"username": "carol", "password": NEW_PASSWORD}).url == reverse("vms:list")
    assert AuditEntry.objects.filter(action="account.signup", owner=carol).exists()


def test_sign_up_refuses_weak_passwords_taken_names_and_taken_addresses(client, alice):
    alice.email = "alice@example.com"
    alice.save()
    response = client.post(
        reverse("signup"),
        {"username": "dave", "email": "dave@example.com", "password1": "123", "password2": "123"},
    )
    assert "This password is too short" in response.content.decode()
    assert "A user with that username already exists." in sign_up(client, username="alice").content.decode()
    assert "exists already" in sign_up(client, email="ALICE@example.com").content.decode()
    assert User.objects.count() == 1 and not mail.outbox


def test_operators_can_close_sign_up(client, settings):
    settings.KVMPANEL_SIGNUP_OPEN = False
    assert sign_up(client).status_code == 404
    assert "Create an account" not in client.get(LOGIN).content.decode()
    assert not User.objects.exists()


def test_a_forged_or_expired_link_changes_nothing(client, settings):
    sign_up(client)
    link = link_in(mail.outbox[0])
    response = client.get(link[:-3] + "xyz/", follow=True)
    assert "This link is not valid" in response.content.decode()
    settings.KVMPANEL_EMAIL_LINK_HOURS = 0
    response = client.get(link, follow=True)
    assert "expired" in response.content.decode()
    assert not User.objects.get(username="carol").email_confirmed


def test_the_link_can_be_sent_again_without_telling_who_exists(client):
    sign_up(client)
    answer = client.post(reverse("resend_confirmation"), {"username": "carol"}, follow=True).content.decode()
    assert len(mail.outbox) == 2
    client.post(reverse("resend_confirmation"), {"username": "carol"})
    assert len(mail.outbox) == 2  # at most one a minute
    nobody = client.post(reverse("resend_confirmation"), {"username": "nobody"}, follow=True).content.decode()
    assert "we have sent the link again" in answer and "we have sent the link again" in nobody


def test_a_new_address_takes_effect_when_its_link_is_opened(client, alice):
    alice.email = "alice@example.com"
    alice.save()
    client.force_login(alice)
    client.post(reverse("profile"), {"first_name": "Alice", "last_name": "A", "email": "new@example.org"})
    alice.refresh_from_db()
    assert (alice.first_name, alice.email) == ("Alice", "alice@example.com")
    (message,) = mail.outbox
    assert message.to == ["new@example.org"]
    client.get(link_in(message))
    alice.refresh_from_db()
    assert alice.email == "new@example.org"


def test_a_password_reset_link_works_once(client, alice):
    alice.email = "alice@example.com"
    alice.save()
    response = client.post(reverse("password_reset"), {"email": "alice@example.com"}, follow=True)
    assert "Check your email" in response.content.decode()
    (message,) = mail.outbox
    form_url = client.get(link_in(message)).url  # Django swaps the token for a session marker
    client.post(form_url, {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})
    assert client.post(LOGIN, {"username": "alice", "password": NEW_PASSWORD}).status_code == 302
    client.post(reverse("logout"))
    assert "This link is not valid" in client.get(link_in(message), follow=True).content.decode()
    assert AuditEntry.objects.filter(action="account.password_reset", owner=alice).exists()


def test_an_unknown_address_gets_the_same_answer_and_no_mail(client):
    response = client.post(reverse("password_reset"), {"email": "nobody@example.com"}, follow=True)
    assert "Check your email" in response.content.decode() and not mail.outbox


def test_changing_the_password_needs_the_old_one_and_keeps_the_session(client, alice):
    client.force_login(alice)
    url = reverse("password_change")
    data = {"old_password": "wrong", "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
    assert "Your old password was entered incorrectly" in client.post(url, data).content.decode()
    data["old_password"] = "alice-pass-123"
    assert client.post(url, data).url == reverse("profile")
    assert client.get(reverse("vms:list")).status_code == 200
    alice.refresh_from_db()
    assert alice.check_password(NEW_PASSWORD)


def test_one_address_makes_only_so_many_accounts_an_hour(client, settings):
    settings.KVMPANEL_SIGNUPS_PER_HOUR = 2
    for number in range(2):
        assert sign_up(client, username=f"user{number}", email=f"u{number}@example.com").status_code == 200
    response = sign_up(client, username="user2", email="u2@example.com")
    assert response.status_code == 429
    assert "Too many new accounts from your address" in response.content.decode()
    assert User.objects.count() == 2 and len(mail.outbox) == 2
