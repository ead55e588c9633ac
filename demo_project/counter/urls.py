"""``path("counter/", include("counter.urls"))``: views that call the counter actor."""

from django.urls import path

from . import views

app_name = "counter"
urlpatterns = [
    path("<slug:key>/", views.count, name="count"),
    path("<slug:key>/increment", views.increment, name="increment"),
]
