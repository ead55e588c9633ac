from django.contrib import admin
from django.urls import include, path
from home.views import index

urlpatterns = [
    path("", index, name="home"),
    path("admin/", admin.site.urls),
    path("api/rivet/", include("rivet_django.urls")),
    path("chat/", include("chat.urls")),
    path("counter/", include("counter.urls")),
]
