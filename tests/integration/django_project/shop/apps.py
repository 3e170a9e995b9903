from django.apps import AppConfig


class ShopConfig(AppConfig):  # type: ignore[misc]
    name = "tests.integration.django_project.shop"
