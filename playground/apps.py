from django.apps import AppConfig


class PlaygroundConfig(AppConfig):
    name = "playground"
    verbose_name = "Playground"

    def ready(self) -> None:
        from django.urls import register_converter

        from playground import logins, signals  # noqa: F401
        from playground.validation import IdConverter

        register_converter(IdConverter, "id")  # before any URL pattern names it
