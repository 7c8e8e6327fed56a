import os
import sys

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from playground.models import Provider, Workspace, validate_base_url, validate_extra_headers


class Command(BaseCommand):
    help = (
        "Add (or update) a provider. The API key is read from PLAYGROUND_PROVIDER_KEY or "
        "stdin, never from the command line, where other users could see it."
    )

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--base-url", required=True, help="e.g. https://api.example.com/v1")
        parser.add_argument("--workspace", default="default", help="workspace slug")
        parser.add_argument(
            "--header", action="append", default=[], metavar="K:V", help="extra header, repeatable"
        )

    def handle(self, *args, name, base_url, workspace, header, **options):
        try:
            validate_base_url(base_url)
            headers = dict(self.split_header(h) for h in header)
            validate_extra_headers(headers)
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        ws = Workspace.objects.filter(slug=workspace).first()
        if ws is None:
            raise CommandError(f"No workspace with slug {workspace!r}.")
        key = self.read_key()
        provider, created = Provider.objects.get_or_create(workspace=ws, name=name)
        provider.base_url = base_url
        provider.extra_headers = headers
        provider.set_api_key(key)
        provider.save()
        verb = "Added" if created else "Updated"
        self.stdout.write(f"{verb} provider {name!r} ({base_url}, key {provider.key_hint or 'none'}).")

    @staticmethod
    def split_header(value: str) -> tuple[str, str]:
        name, sep, content = value.partition(":")
        if not sep or not name.strip():
            raise CommandError(f"--header takes NAME:VALUE, got {value!r}")
        return name.strip(), content.strip()

    @staticmethod
    def read_key() -> str:
        key = os.getenv("PLAYGROUND_PROVIDER_KEY")
        if key is None:
            if sys.stdin.isatty():
                import getpass

                key = getpass.getpass("API key (input hidden): ")
            else:
                key = sys.stdin.readline()
        return key.strip()
