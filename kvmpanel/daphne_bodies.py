"""Keep daphne's Twisted from parsing form bodies that Django parses anyway.

Twisted's Request reads a whole multipart/form-data body into memory and parses it into
`request.args` before daphne sees the request; daphne never uses `args` (it hands the raw body
to Django, whose upload handlers stream files to disk). For a 200 MiB image uploaded in the
backoffice that parse took daphne's memory from about 110 MiB to 2.7 GiB. Twisted lets a
request opt out (`parsePOSTFormSubmission`, Twisted 24.11+); daphne does not, so we do it here.

What remains is daphne's own: it queues the body for Django in memory, as fast as it can read
it from its temporary file (django/daphne#483), about once the body's size while it lasts.
"""

import functools


def leave_form_bodies_to_django() -> None:
    """Make daphne's requests skip Twisted's form parsing (idempotent; daphne not installed: nothing)."""
    try:
        from daphne.http_protocol import WebRequest
    except ImportError:
        return
    if getattr(WebRequest, "kvmpanel_leaves_bodies_alone", False):
        return
    daphne_init = WebRequest.__init__

    @functools.wraps(daphne_init)
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("parsePOSTFormSubmission", False)
        daphne_init(self, *args, **kwargs)

    WebRequest.__init__ = __init__
    WebRequest.kvmpanel_leaves_bodies_alone = True
