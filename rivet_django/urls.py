"""HTTP URLconf: ``path("api/rivet/", include("rivet_django.urls"))``."""

from .api import api

app_name = "rivet"
urlpatterns = api.urls[0]
