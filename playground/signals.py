"""Access taken away reaches open websockets at once, in every process.

Each conversation socket joins its user's group on the channel layer (`user_group`).
A membership deleted tells that group to check access again (4403 without it); one
saved with a changed role closes the sockets with 4409, and the page reconnects under
the new role;
a logout tells it to close the sockets of that session. A user belongs only to the
workspaces they were added to (bootstrap makes the first admin an owner).

The conversation list is live: every change to a Conversation row (created, renamed,
visibility changed, trashed, restored, purged) is told to its workspace's group
(`events.conversation_listed`) once the transaction commits, whichever view made it.
`ActorMiddleware` names who made it: the request's user.
"""

from __future__ import annotations

import contextvars
import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth.signals import user_logged_out
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from playground import relay
from playground.models import Conversation, Membership
from playground.relay import events

log = logging.getLogger(__name__)


def user_group(user_id: int) -> str:
    return f"user-{user_id}"


def tell_user(user_id: int, event: dict) -> None:
    """group_send to the user's sockets after the current transaction commits. Never raises:
    the change itself is stored; the sockets' timer re-check is the backstop."""
    tell(user_group(user_id), event)


def tell(group: str, event: dict) -> None:
    """group_send to `group` after the current transaction commits. Never raises."""

    def send() -> None:
        loop = relay.process.loop
        if loop is not None and loop.is_running():  # a server process: send on its loop
            relay.publish_soon(group, event)
            return
        try:  # a management command or a shell: a loop of its own (Redis carries it on)
            async_to_sync(get_channel_layer().group_send)(group, event)
        except Exception as exc:
            log.warning("could not tell %s of %s: %s", group, event["type"], exc)

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


# ---------------------------------------------------------------- the live conversation list

_request = contextvars.ContextVar("playground_request", default=None)


class ActorMiddleware:
    """Keeps the request at hand while its view runs, so that a model signal can name the
    user who made a change (`actor()`). After AuthenticationMiddleware."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request):
        token = _request.set(request)
        try:
            return self.get_response(request)
        finally:
            _request.reset(token)


def actor() -> str | None:
    """The username of the current request's user, None outside a request or logged out."""
    request = _request.get()
    user = getattr(request, "user", None)
    return user.get_username() if user is not None and user.is_authenticated else None


def listed_action(instance: Conversation, created: bool, update_fields) -> str | None:
    """What a save did to the list entry; None for a save a run's submission makes (it
    touches `updated_at`, and the run's own `run.started` event says so)."""
    if created:
        return "created"
    fields = set(update_fields or ())
    if "updated_at" in fields:
        return None
    if "deleted_at" in fields:
        return "deleted" if instance.deleted_at else "restored"
    if "visibility" in fields:
        return "visibility"
    if "title" in fields:
        return "renamed"
    return None if fields else "changed"


@receiver(post_save, sender=Conversation)
def conversation_saved(sender, instance: Conversation, created: bool, raw: bool = False, **kwargs) -> None:
    action = listed_action(instance, created, kwargs.get("update_fields"))
    if raw or action is None:
        return
    by = actor()
    if by is None and created and instance.creator_id:
        by = instance.creator.get_username()
    elif by is None and action == "deleted" and instance.deleted_by_id:
        by = instance.deleted_by.get_username()
    tell(events.workspace_group(instance.workspace_id), events.conversation_listed(instance, action, by))


@receiver(post_delete, sender=Conversation)
def conversation_purged(sender, instance: Conversation, **kwargs) -> None:
    event = events.conversation_listed(instance, "deleted", actor())
    tell(events.workspace_group(instance.workspace_id), event)
