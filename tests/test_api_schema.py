"""Property-based fuzzing of the API against its own OpenAPI schema (schemathesis, in-process WSGI).

Every operation is called with generated input, as staff and as a customer, over a small world of
objects: no answer may be a server error, and every answer must match the schema (status code,
content type, body). Tasks never run (enqueue is replaced, and on_commit never fires in a test).
"""

import os

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from .api_world import make_world
from .factories import make_token

EXAMPLES_PER_OPERATION = 12
# The same examples on every run, so the suite never fails by luck; API_FUZZ_EXPLORE=1 draws new ones.
EXPLORE = os.environ.get("API_FUZZ_EXPLORE") == "1"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Not negative_data_rejection: DRF is lenient by design (0 for false, an empty filter means none).

schema = schemathesis.openapi.from_dict(SchemaGenerator().get_schema(request=None, public=True))
schema.app = get_wsgi_application()


@pytest.fixture
def wsgi_keeps_the_test_connection():
    """Django's WSGI handler closes the database connection after each request; in a test that is the
    connection holding the test's transaction (Django's own test client does the same as this)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def bearer(db, alice, staff, api_client, no_tasks, settings, wsgi_keeps_the_test_connection):
    """Authorization headers for a customer (alice, who owns the world's objects) and for staff."""
    settings.KVMPANEL_API_RATES = {
        "anonymous": "100000/minute",
        "user": "100000/minute",
        "changes": "100000/minute",
    }
    make_world(alice, staff)
    headers = {}
    for role, user in (("customer", alice), ("staff", staff)):
        headers[role] = {"Authorization": f"Bearer {make_token(user, 'write', name='fuzz')}"}
    return headers


@pytest.mark.parametrize("role", ["customer", "staff"])
@schema.parametrize()
@hypothesis_settings(
    max_examples=EXAMPLES_PER_OPERATION,
    database=None,  # no .hypothesis/ folder
    derandomize=not EXPLORE,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)
def test_the_api_matches_its_schema_and_never_fails(case, bearer, role):
    case.call_and_validate(headers=bearer[role], checks=CHECKS)
