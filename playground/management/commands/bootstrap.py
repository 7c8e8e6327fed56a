import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from playground.models import DEMO_PROVIDER_NAME, Membership, Provider, Workspace, new_demo_key


class Command(BaseCommand):
    help = (
        "First-run set-up, safe to repeat: a workspace, the built-in Demo provider and an admin. "
        "Honours DJANGO_SUPERUSER_USERNAME / _PASSWORD / _EMAIL; otherwise generates a "
        "password and prints it once."
    )

    @transaction.atomic
    def handle(self, *args, **options):
        workspace, first_run = Workspace.objects.get_or_create(slug="default", defaults={"name": "Default"})
        if not workspace.providers.filter(is_demo=True).exists():
            demo = Provider(workspace=workspace, name=DEMO_PROVIDER_NAME, is_demo=True)
            demo.set_api_key(new_demo_key())
            demo.save()
            self.stdout.write("Created the Demo provider.")
        User = get_user_model()
        # Every user has a workspace: those made before there was one (createsuperuser
        # before the first bootstrap) join it, superusers as owners. Only then: later, a
        # user without a membership is one an admin removed.
        for user in User.objects.filter(memberships__isnull=True) if first_run else ():
            role = Membership.Role.OWNER if user.is_superuser else Membership.Role.MEMBER
            Membership.objects.create(workspace=workspace, user=user, role=role)
            self.stdout.write(f"Added {user.get_username()!r} to the {workspace.name} workspace as {role}.")
        username = os.getenv("DJANGO_SUPERUSER_USERNAME", "admin")
        if User.objects.filter(username=username).exists():
            return
        password = os.getenv("DJANGO_SUPERUSER_PASSWORD") or secrets.token_urlsafe(12)
        email = os.getenv("DJANGO_SUPERUSER_EMAIL", "")
        user = User.objects.create_superuser(username=username, email=email, password=password)
        Membership.objects.update_or_create(
            workspace=workspace, user=user, defaults={"role": Membership.Role.OWNER}
        )
        if "DJANGO_SUPERUSER_PASSWORD" in os.environ:
            self.stdout.write(f"Created admin user {username!r} with the password you set.")
        else:
            self.stdout.write(
                self.style.WARNING(
                    f"\n  Log in at /accounts/login/ as {username!r} with password: {password}\n"
                    "  (shown only this once; change it in /admin/)\n"
                )
            )
