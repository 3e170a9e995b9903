"""The project's own pages: one, to tell Django's answers from the dashboard's."""

from django.http import HttpRequest, HttpResponse
from django.urls import path


def home(request: HttpRequest) -> HttpResponse:
    return HttpResponse("shop")


urlpatterns = [path("", home)]
