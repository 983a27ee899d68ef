"""The API speaks JSON only. A request whose Accept header names nothing the API can send (a typo,
a client's odd default) gets JSON anyway, as HTTP allows (RFC 9110, 12.5.1), rather than a 406 that
no endpoint documents and no client can act on."""

from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation


class JSONWhateverTheAcceptHeader(DefaultContentNegotiation):
    def select_renderer(self, request, renderers, format_suffix=None):
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except NotAcceptable:
            if format_suffix or request.query_params.get(self.settings.URL_FORMAT_OVERRIDE):
                raise  # a format asked for by name (?format=yaml) that this view lacks: say so
            return renderers[0], renderers[0].media_type
