"""The ASGI static file app: serves what exists, refuses what leaves the static folders."""

import pytest

from kvmpanel.static_asgi import StaticFilesApp

from .asgi_helpers import run_off_loop


async def fallback(scope, receive, send):
    await send({"type": "http.response.start", "status": 299, "headers": []})
    await send({"type": "http.response.body", "body": b"django"})


def get(path: str, from_sources: bool = True, method: str = "GET"):
    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "path": path, "method": method}
    run_off_loop(StaticFilesApp(fallback, from_sources)(scope, None, send))
    headers = dict(sent[0].get("headers", []))
    return sent[0]["status"], headers, sent[1]["body"]


def test_it_serves_a_module_script_with_a_javascript_type():
    status, headers, body = get("/static/js/keys.js")
    assert status == 200
    assert headers[b"content-type"].startswith(b"text/javascript")
    assert b"export function typeText" in body


def test_it_serves_npm_packages_from_their_folder():
    status, _, body = get("/static/vendor/novnc/core/rfb.js")
    assert status == 200 and b"export default class RFB" in body


@pytest.mark.parametrize(
    "path", ["/static/../manage.py", "/static/%2e%2e/manage.py", "/static/", "/static/nothing.js"]
)
def test_it_refuses_what_is_not_a_static_file(path):
    assert get(path)[0] == 404
    assert get(path, from_sources=False)[0] == 404


def test_other_paths_go_to_django():
    assert get("/vms/")[0] == 299
