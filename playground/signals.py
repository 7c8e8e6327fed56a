from django.conf import settings
from django.db.models.signals import post_save
from django.dispatch import receiver

from playground.models import Membership, Workspace


@receiver(post_save, sender=settings.AUTH_USER_MODEL)
def join_first_workspace(sender, instance, created: bool, raw: bool = False, **kwargs) -> None:
    """Every user has at least one workspace: new users join the oldest one as members."""
    if not created or raw:
        return
    workspace = Workspace.objects.order_by("id").first()
    if workspace is not None:
        Membership.objects.get_or_create(workspace=workspace, user=instance)
