"""Signing in: throttling, sessions, the idle timeout and asking for the password again."""

import os
import secrets
import subprocess
import sys
import time

import pytest
from django.urls import reverse

from accounts import middleware, reauth
from accounts.models import AuditEntry
from vms.models import Operation

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"


def sign_in(client, username, password=None, address="10.0.0.1"):
    return client.post(
        LOGIN, {"username": username, "password": password or f"{username}-pass-123"}, REMOTE_ADDR=address
    )


def test_signing_in_starts_a_new_session(client, alice):
    client.get(LOGIN)
    client.cookies["sessionid"] = "planted-by-an-attacker"
    session = client.session
    session["x"] = 1
    session.save()
    before = session.session_key
    assert sign_in(client, "alice").status_code == 302
    assert client.cookies["sessionid"].value != before


def test_signing_out_ends_the_session(client, alice):
    sign_in(client, "alice")
    old_key = client.cookies["sessionid"].value
    client.post(reverse("logout"))
    client.cookies["sessionid"] = old_key  # replaying the old cookie does not help
    assert client.get(reverse("vms:list")).status_code == 302


def test_an_account_is_locked_after_five_wrong_passwords_even_with_the_right_one(client, alice):
    for attempt in range(5):
        sign_in(client, "alice", "wrong", address=f"10.0.0.{attempt + 1}")  # spread over addresses
    response = sign_in(client, "alice", address="10.9.9.9")
    assert response.status_code == 429
    assert "Too many attempts" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_an_address_is_locked_after_five_failures_whatever_the_accounts(client, alice, bob):
    for number in range(5):
        sign_in(client, f"guess-{number}", "wrong", address="203.0.113.7")
    assert sign_in(client, "bob", address="203.0.113.7").status_code == 429
    assert sign_in(client, "bob", address="198.51.100.1").status_code == 302  # from elsewhere, fine


def test_a_success_clears_the_count(client, alice):
    for _ in range(4):
        sign_in(client, "alice", "wrong")
    assert sign_in(client, "alice").status_code == 302
    client.post(reverse("logout"))
    for _ in range(4):
        sign_in(client, "alice", "wrong")
    assert sign_in(client, "alice").status_code == 302


def test_a_failed_sign_in_is_in_the_owners_activity(client, alice):
    sign_in(client, "alice", "wrong", address="203.0.113.44")
    entry = AuditEntry.objects.get(action="account.login", outcome="refused")
    assert (entry.owner, entry.address) == (alice, "203.0.113.44")


def test_an_idle_session_is_signed_out(client, alice):
    sign_in(client, "alice")
    assert client.get(reverse("vms:list")).status_code == 200
    session = client.session
    session[middleware.LAST_SEEN] = time.time() - 31 * 60
    session.save()
    response = client.get(reverse("vms:list"))
    assert response.status_code == 302 and response.url.startswith(LOGIN)
    assert client.get(reverse("vms:list")).status_code == 302  # the session is gone, not just redirected


def test_background_refreshes_do_not_keep_a_session_alive(client, alice, alice_vm):
    sign_in(client, "alice")
    session = client.session
    idle_since = time.time() - 20 * 60
    session[middleware.LAST_SEEN] = idle_since
    session.save()
    client.get(reverse("vms:live", args=[alice_vm.uuid]), HTTP_HX_REQUEST="true")
    assert client.session[middleware.LAST_SEEN] == idle_since
    client.get(reverse("vms:list"))
    assert client.session[middleware.LAST_SEEN] > idle_since


def test_deleting_a_vm_asks_for_the_password_when_the_sign_in_is_old(client, alice, alice_vm):
    sign_in(client, "alice")
    session = client.session
    session[reauth.CONFIRMED_AT] = time.time() - 11 * 60
    session.save()
    delete_url = reverse("vms:delete", args=[alice_vm.uuid])

    response = client.post(delete_url, {"confirm_hostname": alice_vm.hostname})
    assert response.status_code == 302 and response.url.startswith(reverse("reauth"))
    assert not Operation.objects.exists()

    response = client.post(reverse("reauth"), {"password": "wrong", "next": delete_url})
    assert "That is not your password." in response.content.decode()
    response = client.post(reverse("reauth"), {"password": "alice-pass-123", "next": delete_url})
    assert response.url == delete_url
    assert client.get(delete_url).status_code == 200


def test_the_confirmation_never_sends_the_user_to_another_site(client, alice):
    sign_in(client, "alice")
    response = client.post(reverse("reauth"), {"password": "alice-pass-123", "next": "https://evil.example/"})
    assert response.url == reverse("profile")


def test_the_backoffice_has_no_sign_in_form_of_its_own(client):
    response = client.get("/backoffice/login/")
    assert response.status_code == 302 and response.url.startswith(LOGIN)


def test_check_deploy_reports_nothing_with_production_settings(tmp_path):
    """`manage.py check --deploy` as README's production setup runs it: HTTPS, DEBUG off, own key and host."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "kvmpanel.settings",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DEBUG": "0",
        "HTTPS": "1",
        "ALLOWED_HOSTS": "panel.example.com",
        "KVMPANEL_VAR_DIR": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "DEBUG"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


def test_graph_refreshes_do_not_keep_a_session_alive_either(client, alice, alice_vm):
    sign_in(client, "alice")
    session = client.session
    idle_since = time.time() - 20 * 60
    session[middleware.LAST_SEEN] = idle_since
    session.save()
    usage_url = reverse("vms:usage", args=[alice_vm.uuid])
    assert client.get(usage_url, HTTP_X_BACKGROUND_REFRESH="1").status_code == 200
    assert client.session[middleware.LAST_SEEN] == idle_since


def test_a_background_refresh_after_the_idle_time_sends_the_whole_page_to_sign_in(client, alice, alice_vm):
    sign_in(client, "alice")
    session = client.session
    session[middleware.LAST_SEEN] = time.time() - 31 * 60
    session.save()
    page = f"http://testserver{alice_vm.get_absolute_url()}"
    response = client.get(
        reverse("vms:live", args=[alice_vm.uuid]), HTTP_HX_REQUEST="true", HTTP_HX_CURRENT_URL=page
    )
    assert response.status_code == 401  # not a redirect htmx would follow into the page
    assert response["HX-Redirect"] == f"{LOGIN}?next=%2Fvms%2F{alice_vm.uuid}%2F"
    assert "_auth_user_id" not in client.session
