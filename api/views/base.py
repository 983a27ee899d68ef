class RateLimitedFirst:
    """Check rate limits before permissions (DRF checks them after), so requests without credentials
    are counted against their address as well, not answered 401 for free."""

    def check_permissions(self, request):
        super().check_throttles(request)
        super().check_permissions(request)

    def check_throttles(self, request):
        pass  # done in check_permissions, before them
