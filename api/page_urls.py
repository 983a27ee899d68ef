from django.urls import path

from . import pages

urlpatterns = [
    path("", pages.token_list, name="api_tokens"),
    path("<int:token_id>/revoke/", pages.token_revoke, name="api_token_revoke"),
]
