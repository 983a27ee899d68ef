from django.urls import path

from . import views

app_name = "nodes"

urlpatterns = [
    path("<int:node_id>/usage/", views.node_usage, name="usage"),
]
