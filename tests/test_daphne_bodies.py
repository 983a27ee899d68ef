"""daphne's Twisted leaves form bodies to Django (which streams uploads to disk) instead of parsing them
into memory first; the memory it saves is measured in tests/integration/test_image_upload_browser.py."""

from unittest import mock

from daphne.http_protocol import WebRequest

from kvmpanel.daphne_bodies import leave_form_bodies_to_django


def test_daphnes_requests_skip_twisteds_form_parsing():
    leave_form_bodies_to_django()
    leave_form_bodies_to_django()  # twice is harmless: wrapped once
    request = WebRequest(mock.MagicMock())
    assert request._parsePOSTFormSubmission is False


def test_the_asgi_application_sets_it_up():
    import kvmpanel.asgi  # noqa: F401

    assert WebRequest.kvmpanel_leaves_bodies_alone
