"""One error body for every error, and the rate limits."""

import pytest

from .factories import make_vm

pytestmark = pytest.mark.django_db

RATES = {"anonymous": "3/minute", "user": "5/minute", "changes": "2/minute"}


def error_of(response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"])
    return body["error"]


def test_every_error_has_the_same_shape(alice, api_client, no_tasks):
    vm = make_vm(alice)
    client = api_client(alice)
    cases = {
        400: client.post("/api/v1/ssh-keys/", {}, format="json"),
        401: api_client().get("/api/v1/vms/"),
        403: client.get("/api/v1/admin/users/"),
        404: client.get("/api/v1/vms/00000000-0000-0000-0000-000000000000/"),
        405: client.put(f"/api/v1/vms/{vm.uuid}/", {}, format="json"),
        409: client.post(f"/api/v1/vms/{vm.uuid}/start/"),
        415: client.post("/api/v1/ssh-keys/", "x=1", content_type="application/x-www-form-urlencoded"),
    }
    for status, response in cases.items():
        assert response.status_code == status
        assert error_of(response)["message"]
    assert error_of(cases[400])["fields"] == {"public_key": ["This field is required."]}


@pytest.mark.parametrize("path", ["/api/v2/anything", "/api/v1/%0A/", "/api/v1/nothing/"])
def test_unknown_api_paths_answer_in_json(api_client, path):
    response = api_client().post(path)
    assert response.status_code == 404 and error_of(response)["code"] == "not_found"


def test_users_are_limited_per_user(alice, bob, api_client, settings):
    settings.KVMPANEL_API_RATES = RATES
    client = api_client(alice)
    codes = [client.get("/api/v1/me/").status_code for _ in range(6)]
    assert codes == [200] * 5 + [429]
    limited = client.get("/api/v1/me/")
    assert error_of(limited)["code"] == "throttled" and int(limited["Retry-After"]) > 0
    assert api_client(bob).get("/api/v1/me/").status_code == 200  # bob has his own count


def test_changes_have_a_stricter_limit(alice, api_client, settings, no_tasks):
    settings.KVMPANEL_API_RATES = RATES
    client = api_client(alice)
    vm = make_vm(alice)
    codes = [client.post(f"/api/v1/vms/{vm.uuid}/start/").status_code for _ in range(3)]
    assert codes == [409, 409, 429]
    assert client.get("/api/v1/me/").status_code == 200  # reads still go through


def test_anonymous_requests_are_limited_per_address(api_client, settings):
    settings.KVMPANEL_API_RATES = RATES
    client = api_client()
    codes = [client.get("/api/v1/vms/").status_code for _ in range(4)]
    assert codes == [401, 401, 401, 429]
    assert client.get("/api/v1/vms/", REMOTE_ADDR="203.0.113.1").status_code == 401


def test_the_schema_and_the_docs_page_are_served(client):
    schema = client.get("/api/v1/schema/")
    assert schema.status_code == 200 and b"openapi: 3" in schema.content
    docs = client.get("/api/v1/docs/")
    assert docs.status_code == 200
    assert b"/static/drf_spectacular_sidecar/swagger-ui-dist/" in docs.content  # no CDN: local assets


def test_a_forged_forwarded_for_header_does_not_escape_the_limit(api_client, settings):
    settings.KVMPANEL_API_RATES = RATES
    client = api_client()
    codes = [client.get("/api/v1/vms/", HTTP_X_FORWARDED_FOR=f"198.51.100.{n}").status_code for n in range(4)]
    assert codes == [401, 401, 401, 429]


def test_wrong_tokens_are_limited_per_address(api_client, settings):
    settings.KVMPANEL_API_RATES = RATES
    client = api_client()
    client.credentials(HTTP_AUTHORIZATION="Bearer kvp_000000000000_wrong")
    codes = [client.get("/api/v1/vms/").status_code for _ in range(4)]
    assert codes == [401, 401, 401, 429]
