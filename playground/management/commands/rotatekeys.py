from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from playground import keys
from playground.models import Provider


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored provider key under the newest encryption key. "
        "With PLAYGROUND_ENCRYPTION_KEYS set, put the new key first and keep the old one "
        "after it until this has run. With the key file, a new key is generated, every key "
        "re-encrypted, and the old key removed from the file."
    )

    def handle(self, *args, **options):
        using_file = not settings.ENCRYPTION_KEYS
        if using_file:
            old = keys.load_keys()
            keys.write_key_file([Fernet.generate_key().decode(), *old])
        count = self.rotate_all()
        if using_file:
            keys.write_key_file(keys.load_keys()[:1])
            self.stdout.write(f"Generated a new key in {settings.ENCRYPTION_KEY_FILE}.")
        else:
            self.stdout.write("Done. You can now drop the old keys from PLAYGROUND_ENCRYPTION_KEYS.")
        self.stdout.write(f"Re-encrypted {count} provider key(s).")

    @transaction.atomic
    def rotate_all(self) -> int:
        """All or nothing: one key that no configured key decrypts stops the rotation."""
        providers = list(Provider.objects.select_for_update().exclude(api_key_encrypted=""))
        unreadable = []
        for provider in providers:
            try:
                provider.api_key_encrypted = keys.rotate(provider.api_key_encrypted)
            except InvalidToken:
                unreadable.append(f"{provider.name} ({provider.workspace.slug})")
        if unreadable:
            raise CommandError(
                "No configured encryption key decrypts the key of: "
                + ", ".join(unreadable)
                + ". Add the old encryption key (after the new one) and run this again."
            )
        for provider in providers:
            provider.save(update_fields=["api_key_encrypted"])
        return len(providers)
