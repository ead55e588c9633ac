"""``path("chat/", include("chat.urls"))``: the page, a page per room, and its assets."""

from django.urls import path

from . import views

app_name = "chat"
urlpatterns = [
    path("", views.room, name="index"),
    path("assets/<str:name>", views.asset, name="asset"),
    path("<slug:room>/", views.room, name="room"),
]
