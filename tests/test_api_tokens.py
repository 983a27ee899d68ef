"""Personal API tokens: stored hashed, shown once, expiring, read-only or read-write, revocable."""

import datetime as dt
import hashlib

import pytest
from django.urls import reverse
from django.utils import timezone
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.plugins.otp_totp.models import TOTPDevice
from rest_framework.test import APIClient

from accounts.models import AuditEntry
from api import tokens
from api.models import APIToken
from vms.models import Operation

from .api_world import suspend
from .factories import make_user, make_vm

pytestmark = pytest.mark.django_db


def bearer(clear_text: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {clear_text}")
    return client


def test_only_the_secrets_sha256_is_stored(alice):
    token, clear_text = tokens.create(alice, name="ci", scope="read")
    prefix, secret = clear_text.removeprefix("kvp_").split("_", 1)
    row = APIToken.objects.get(pk=token.pk)
    assert row.prefix == prefix
    assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in str(APIToken.objects.filter(pk=token.pk).values().get())
    assert len(secret) >= 43  # 32 random bytes


def test_a_token_authenticates_its_user(alice, fresh_api_rates):
    _token, clear_text = tokens.create(alice, name="ci", scope="read")
    response = bearer(clear_text).get("/api/v1/me/")
    assert response.status_code == 200
    assert response.json()["username"] == "alice"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # wrong secret, right prefix
        lambda t: t.replace("kvp_", "kvx_"),
        lambda t: "kvp_" + "0" * 12 + t[16:],  # unknown prefix
        lambda t: t + " extra",
        lambda t: "kvp_é",
    ],
)
def test_a_wrong_or_malformed_token_is_refused(alice, fresh_api_rates, mangle):
    _token, clear_text = tokens.create(alice, name="ci", scope="write")
    response = bearer(mangle(clear_text)).get("/api/v1/me/")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "authentication_failed"


def test_an_expired_token_is_refused(alice, fresh_api_rates):
    _token, clear_text = tokens.create(
        alice, name="ci", scope="write", expires_at=timezone.now() - dt.timedelta(seconds=1)
    )
    assert bearer(clear_text).get("/api/v1/me/").status_code == 401


def test_a_token_works_until_it_expires(alice, fresh_api_rates):
    _token, clear_text = tokens.create(
        alice, name="ci", scope="write", expires_at=timezone.now() + dt.timedelta(hours=1)
    )
    assert bearer(clear_text).get("/api/v1/me/").status_code == 200


def test_a_revoked_token_is_refused(alice, fresh_api_rates):
    token, clear_text = tokens.create(alice, name="ci", scope="write")
    tokens.revoke(token)
    assert bearer(clear_text).get("/api/v1/me/").status_code == 401


def test_a_suspended_users_token_is_refused(alice, staff, fresh_api_rates):
    _token, clear_text = tokens.create(alice, name="ci", scope="write")
    suspend(alice, staff)
    response = bearer(clear_text).get("/api/v1/me/")
    assert response.status_code == 401
    assert "suspended" in response.json()["error"]["message"]


def test_a_suspended_users_session_is_refused(client, alice, staff, fresh_api_rates):
    client.force_login(alice)
    suspend(alice, staff)
    assert client.get("/api/v1/me/").status_code == 401


@pytest.mark.parametrize("kind", ["start", "shutdown", "force-off", "reboot"])
def test_a_read_only_token_cannot_change_power(alice, api_client, no_tasks, kind):
    vm = make_vm(alice)
    reader = api_client(alice, scope="read")
    response = reader.post(f"/api/v1/vms/{vm.uuid}/{kind}/")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "read_only_token"
    assert not Operation.objects.exists()


def test_a_read_only_token_cannot_delete_or_open_the_console(alice, api_client, no_tasks):
    vm = make_vm(alice)
    reader = api_client(alice, scope="read")
    assert reader.delete(f"/api/v1/vms/{vm.uuid}/").status_code == 403
    assert reader.post(f"/api/v1/vms/{vm.uuid}/console-token/").status_code == 403
    assert reader.get(f"/api/v1/vms/{vm.uuid}/").status_code == 200
    assert not Operation.objects.exists()


def test_a_read_write_token_can_act(alice, api_client, no_tasks):
    vm = make_vm(alice)
    response = api_client(alice, scope="write").post(f"/api/v1/vms/{vm.uuid}/reboot/")
    assert response.status_code == 202
    assert Operation.objects.get().kind == "reboot"


def test_last_use_is_written_at_most_once_a_minute(alice, fresh_api_rates):
    token, clear_text = tokens.create(alice, name="ci", scope="read")
    client = bearer(clear_text)
    client.get("/api/v1/me/")
    first = APIToken.objects.get(pk=token.pk).last_used_at
    assert first is not None
    client.get("/api/v1/me/")
    assert APIToken.objects.get(pk=token.pk).last_used_at == first
    APIToken.objects.filter(pk=token.pk).update(last_used_at=first - dt.timedelta(minutes=2))
    client.get("/api/v1/me/")
    assert APIToken.objects.get(pk=token.pk).last_used_at > first


def test_token_calls_are_audited_with_the_tokens_user_as_actor(alice, no_tasks, fresh_api_rates):
    vm = make_vm(alice)
    _token, clear_text = tokens.create(alice, name="ci", scope="write")
    bearer(clear_text).post(f"/api/v1/vms/{vm.uuid}/reboot/", REMOTE_ADDR="203.0.113.7")
    entry = AuditEntry.objects.get(action="vm.reboot")
    assert (entry.actor, entry.actor_name, entry.outcome) == (alice, "alice", "requested")
    assert entry.address == "203.0.113.7"


def test_a_refused_token_call_is_audited_with_the_tokens_user(alice, no_tasks, fresh_api_rates):
    vm = make_vm(alice)  # running: start is refused by vms.actions, which records the refusal
    _token, clear_text = tokens.create(alice, name="ci", scope="write")
    bearer(clear_text).post(f"/api/v1/vms/{vm.uuid}/start/")
    entry = AuditEntry.objects.get(action="vm.start")
    assert (entry.actor, entry.outcome) == (alice, "refused")


# The portal pages.


def test_the_page_creates_a_token_and_shows_it_once(client, alice, sign_in_confirmed):
    sign_in_confirmed(alice)
    response = client.post(
        reverse("api_tokens"), {"name": "backup", "scope": "write", "expires_in_days": "30"}, follow=True
    )
    assert response.redirect_chain == [(reverse("api_tokens"), 302)]  # a reload makes no second token
    token = APIToken.objects.get()
    clear_text = response.context["created"]["clear_text"]
    assert clear_text.startswith(f"kvp_{token.prefix}_") and clear_text in response.content.decode()
    assert "no-store" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]
    assert token.scope == "write" and token.expires_at > timezone.now() + dt.timedelta(days=29)
    again = client.get(reverse("api_tokens"))
    assert clear_text not in again.content.decode()
    assert f"kvp_{token.prefix}_" in again.content.decode()


def test_the_page_lists_last_use(client, alice):
    token, _ = tokens.create(alice, name="backup", scope="read")
    APIToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now() - dt.timedelta(hours=3))
    client.force_login(alice)
    page = client.get(reverse("api_tokens")).content.decode()
    assert "last used" in page and "3\xa0hours ago" in page


def test_a_token_can_be_made_without_expiry(client, alice, sign_in_confirmed):
    sign_in_confirmed(alice)
    client.post(reverse("api_tokens"), {"name": "forever", "scope": "read", "expires_in_days": ""})
    assert APIToken.objects.get().expires_at is None


def test_creating_and_revoking_are_audited(client, alice, sign_in_confirmed):
    sign_in_confirmed(alice)
    client.post(reverse("api_tokens"), {"name": "backup", "scope": "read", "expires_in_days": ""})
    token = APIToken.objects.get()
    client.post(reverse("api_token_revoke", args=[token.pk]))
    actions = list(AuditEntry.objects.filter(owner=alice).values_list("action", "actor__username"))
    assert ("apitoken.create", "alice") in actions and ("apitoken.revoke", "alice") in actions
    token.refresh_from_db()
    assert token.revoked_at is not None


def test_making_a_token_asks_for_the_password_when_the_sign_in_is_old(client, alice):
    client.force_login(alice)  # no recent confirmation
    response = client.post(reverse("api_tokens"), {"name": "sneaky", "scope": "write", "expires_in_days": ""})
    assert response.status_code == 302 and response.url.startswith(reverse("reauth"))
    assert not APIToken.objects.exists()


def test_the_outsider_cannot_revoke_or_see_anothers_token(client, alice, bob):
    token, _ = tokens.create(alice, name="alices-token", scope="read")
    client.force_login(bob)
    assert client.get(reverse("api_token_revoke", args=[token.pk])).status_code == 404
    assert client.post(reverse("api_token_revoke", args=[token.pk])).status_code == 404
    page = client.get(reverse("api_tokens")).content.decode()
    assert "alices-token" not in page and token.prefix not in page
    token.refresh_from_db()
    assert token.revoked_at is None


def test_anonymous_is_sent_to_sign_in(client):
    assert client.get(reverse("api_tokens")).status_code == 302
    assert client.post(reverse("api_tokens"), {"name": "x", "scope": "write"}).status_code == 302
    assert not APIToken.objects.exists()


def test_a_session_needs_the_csrf_token_to_change_anything(alice, no_tasks, fresh_api_rates):
    vm = make_vm(alice)
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.get(f"/api/v1/vms/{vm.uuid}/").status_code == 200
    response = client.post(f"/api/v1/vms/{vm.uuid}/reboot/")
    assert response.status_code == 403 and "CSRF" in response.json()["error"]["message"]
    assert not Operation.objects.exists()


# Staff tokens: only with two-factor on, short-lived; any token may be bound to address ranges ----


@pytest.fixture
def operator(db):
    return make_user("operator", is_staff=True)


def test_staff_without_two_factor_cannot_make_a_token(client, operator, sign_in_confirmed):
    with pytest.raises(tokens.TokenRefused, match="two-factor"):
        tokens.create(operator, name="ops", scope="write", expires_at=timezone.now() + dt.timedelta(days=1))
    sign_in_confirmed(operator)
    body = {"name": "ops", "scope": "write", "expires_in_days": "30"}
    page = client.post(reverse("api_tokens"), body).content.decode()
    assert "only with two-factor sign-in turned on" in page
    assert not APIToken.objects.exists()


@pytest.mark.parametrize("expiry", ["", "90", "365"])
def test_staff_tokens_live_at_most_the_staff_maximum(client, operator, sign_in_confirmed, expiry):
    operator.two_factor_enabled = True
    operator.save()
    device = TOTPDevice.objects.create(user=operator, name="app", confirmed=True)
    sign_in_confirmed(operator)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id  # the code was given at sign-in
    session.save()
    page = client.get(reverse("api_tokens")).content.decode()
    assert "Never" not in page and "30 days (the longest for staff)" in page
    client.post(reverse("api_tokens"), {"name": "ops", "scope": "write", "expires_in_days": expiry})
    assert not APIToken.objects.exists()
    client.post(reverse("api_tokens"), {"name": "ops", "scope": "write", "expires_in_days": "30"})
    token = APIToken.objects.get()
    assert token.expires_at - timezone.now() <= dt.timedelta(days=30)


def test_a_staff_token_stops_when_two_factor_is_off_or_it_is_too_old(operator, fresh_api_rates):
    operator.two_factor_enabled = True
    operator.save()
    token, clear_text = tokens.create(
        operator, name="ops", scope="read", expires_at=timezone.now() + dt.timedelta(days=30)
    )
    assert bearer(clear_text).get("/api/v1/admin/nodes/").status_code == 200
    operator.two_factor_enabled = False
    operator.save()
    response = bearer(clear_text).get("/api/v1/admin/nodes/")
    assert response.status_code == 401 and "two-factor" in response.json()["error"]["message"]
    operator.two_factor_enabled = True
    operator.save()
    # A token made before the rule, without expiry, 31 days ago: too old for staff.
    APIToken.objects.filter(pk=token.pk).update(
        expires_at=None, created_at=timezone.now() - dt.timedelta(days=31)
    )
    response = bearer(clear_text).get("/api/v1/admin/nodes/")
    assert response.status_code == 401 and "after 30 days" in response.json()["error"]["message"]


def test_a_token_bound_to_address_ranges_works_only_from_them(alice, fresh_api_rates):
    _token, clear_text = tokens.create(
        alice, name="ci", scope="read", allowed_networks="203.0.113.0/24 2001:db8::/48"
    )
    assert bearer(clear_text).get("/api/v1/me/").status_code == 401  # the test client is 127.0.0.1
    assert bearer(clear_text).get("/api/v1/me/", REMOTE_ADDR="203.0.113.9").status_code == 200
    assert bearer(clear_text).get("/api/v1/me/", REMOTE_ADDR="2001:db8::5").status_code == 200
    response = bearer(clear_text).get("/api/v1/me/", REMOTE_ADDR="198.51.100.1")
    assert response.json()["error"]["message"] == "This token does not work from your address."


def test_the_page_binds_a_token_to_ranges_and_refuses_nonsense(client, alice, sign_in_confirmed):
    sign_in_confirmed(alice)
    body = {"name": "ci", "scope": "read", "expires_in_days": "30"}
    page = client.post(reverse("api_tokens"), {**body, "allowed_networks": "203.0.113.0/24, banana"})
    assert "Not an address range" in page.content.decode() and not APIToken.objects.exists()
    client.post(reverse("api_tokens"), {**body, "allowed_networks": "203.0.113.7/24, 2001:db8::/48"})
    assert APIToken.objects.get().allowed_networks == "203.0.113.0/24 2001:db8::/48"
