"""Content-Security-Policy on every page: scripts only from the panel's own files, nothing inline.

No inline script anywhere (the templates load static/js/…), so script-src is 'self' alone and a
page that some day echoed markup by mistake still could not run it. Styles may be inline: the
backoffice's and Swagger UI's own markup uses style attributes and a <style> block, and a style
cannot run code. A view that must let the page connect elsewhere (the console page, to the VNC
bridge on its own port) adds that source for its response with `allow()`.

django-csp would do this; it could not be installed here (see the README), and the policy is fixed
enough that a header of our own is the smaller thing to keep.
"""

POLICY = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'", "'unsafe-inline'"],
    "img-src": ["'self'", "data:"],
    "font-src": ["'self'"],
    "connect-src": ["'self'"],  # 'self' covers the page's own ws:// and wss:// (CSP level 3)
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}
HEADER = "Content-Security-Policy"
_EXTRA = "_csp_extra_sources"


def allow(request, directive: str, source: str) -> None:
    """Let this response's page also use `source` for `directive` (e.g. connect-src to the bridge)."""
    getattr(request, _EXTRA, None) or setattr(request, _EXTRA, {})
    getattr(request, _EXTRA).setdefault(directive, []).append(source)


def policy_for(request) -> str:
    extra = getattr(request, _EXTRA, {})
    return "; ".join(
        " ".join([directive, *sources, *extra.get(directive, [])]) for directive, sources in POLICY.items()
    )


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response.headers.setdefault(HEADER, policy_for(request))
        return response
