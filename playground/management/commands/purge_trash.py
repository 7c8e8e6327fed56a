"""Purge conversations in the trash for longer than PLAYGROUND_TRASH_DAYS (their runs stay
in the ledger). Listing the trash purges a workspace's lazily; run this daily too."""

from django.conf import settings
from django.core.management.base import BaseCommand

from playground.transcripts import purge_trash


class Command(BaseCommand):
    help = "Delete conversations in the trash for longer than PLAYGROUND_TRASH_DAYS days."

    def handle(self, *args, **options) -> None:
        purged = purge_trash()
        days = settings.PLAYGROUND_TRASH_DAYS
        self.stdout.write(f"Purged {purged} conversation(s) in the trash for more than {days} days.")
