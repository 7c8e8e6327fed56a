"""Access taken away reaches open websockets at once, in every process.

Each conversation socket joins its user's group on the channel layer (`user_group`).
A membership deleted tells that group to check access again (4403 without it); one
saved with a changed role closes the sockets with 4409, and the page reconnects under
the new role;
a logout tells it to close the sockets of that session. A user belongs only to the
workspaces they were added to (bootstrap makes the first admin an owner).
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from playground import relay
from playground.models import Membership

log = logging.getLogger(__name__)


def user_group(user_id: int) -> str:
    return f"user-{user_id}"


def tell_user(user_id: int, event: dict) -> None:
    """group_send to the user's sockets after the current transaction commits. Never raises:
    the change itself is stored; the sockets' timer re-check is the backstop."""

    def send() -> None:
        loop = relay.process.loop
        if loop is not None and loop.is_running():  # a server process: send on its loop
            relay.publish_soon(user_group(user_id), event)
            return
        try:  # a management command or a shell: a loop of its own (Redis carries it on)
            async_to_sync(get_channel_layer().group_send)(user_group(user_id), event)
        except Exception as exc:
            log.warning("could not tell user %s's sockets of %s: %s", user_id, event["type"], exc)

    transaction.on_commit(send)


@receiver(post_save, sender=Membership)
def membership_saved(sender, instance: Membership, created: bool, raw: bool = False, **kwargs) -> None:
    if not created and not raw:  # a role changed: the sockets close (4409) and reconnect
        tell_user(instance.user_id, {"type": "access.changed", "role": instance.role})


@receiver(post_delete, sender=Membership)
def membership_deleted(sender, instance: Membership, **kwargs) -> None:
    tell_user(instance.user_id, {"type": "access.changed", "role": None})


@receiver(user_logged_out)
def logged_out(sender, request, user, **kwargs) -> None:
    if user is not None:
        tell_user(user.pk, {"type": "user.logged_out", "session": request.session.session_key})
