"""For the test settings only: the integration tests flush the database between tests while the panel's
own processes (daphne, the Celery worker) run on for the whole session, and content types come back
with new ids. Django caches them per process, so a NIC's addresses (a generic relation) would be
written and read under stale ids. Each request and each task starts with the cache cleared."""

from celery.signals import task_prerun


def _clear() -> None:
    from django.contrib.contenttypes.models import ContentType  # imported by the settings: apps not ready

    ContentType.objects.clear_cache()


def fresh_content_types(get_response):
    """Middleware: the content types as the database has them now."""

    def middleware(request):
        _clear()
        return get_response(request)

    return middleware


@task_prerun.connect(dispatch_uid="kvmpanel.test_freshness")
def _before_each_task(**kwargs) -> None:
    _clear()
