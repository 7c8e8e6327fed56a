"""Editing a conversation by hand: add, edit, delete and reorder turns, pick one of
n choices, fork from any message.

Positions order the transcript; the choices of one run share a position. A
change is refused while an answer is streaming in the conversation (it would
land among turns that moved under it). Every change tells the conversation's
watchers to re-read it.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models import Max
from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404

from playground.access import conversation_for
from playground.api import Refused, api, json_error
from playground.models import Conversation, Message, Run
from playground.transcripts import announce, transcript
from playground.validation import clean_message, is_id

BUSY = "An answer is streaming in this conversation: stop it or let it finish first."


def _message_for(request: HttpRequest, message_id: int) -> tuple[Message, Conversation]:
    """The message and its conversation, when the user may change it (else 404/403)."""
    message = get_object_or_404(Message, id=message_id)
    return message, conversation_for(request.user, message.conversation_id, "conversation.write")


def _lock(conv: Conversation) -> Conversation:
    """Inside a transaction: the conversation's row locked; Refused (409) while an answer streams."""
    conv = Conversation.objects.select_for_update().get(id=conv.id)
    if conv.runs.filter(status__in=Run.ACTIVE).exists():
        raise Refused(409, BUSY)
    return conv


def _changed(conv: Conversation) -> JsonResponse:
    transaction.on_commit(lambda: announce(conv.id, messages=True))
    return JsonResponse(transcript(conv))


def next_position(conv: Conversation) -> int:
    top_message = conv.messages.aggregate(top=Max("position"))["top"] or 0
    top_run = conv.runs.aggregate(top=Max("position"))["top"] or 0
    return max(top_message, top_run) + 1


@api(methods={"POST": "conversation.write"}, json=True)
def add_message(request: HttpRequest, conversation_id: int) -> JsonResponse:
    """Append a turn of any role: a user message, an assistant reply, a tool result."""
    conv = conversation_for(request.user, conversation_id, "conversation.write")
    turn = clean_message(request.json())
    with transaction.atomic():
        conv = _lock(conv)
        Message.objects.create(conversation=conv, position=next_position(conv), **turn)
        return _changed(conv)


@api(methods={"PATCH": "conversation.write", "DELETE": "conversation.write"}, json=True)
def message_detail(request: HttpRequest, message_id: int) -> JsonResponse:
    message, conv = _message_for(request, message_id)
    if request.method == "PATCH":
        # A change is checked as the whole message it makes (a tool result keeps its call's id).
        stored = {"role": message.role, "tool_call_id": message.tool_call_id or None}
        turn = clean_message({**stored, **request.json()}, partial=True)
    with transaction.atomic():
        conv = _lock(conv)
        if request.method == "DELETE":
            if message.run_id:
                # The same answer's other choices: one continues the conversation instead,
                # and with none left the answer leaves the transcript.
                siblings = Message.objects.filter(run_id=message.run_id).exclude(id=message.id)
                other = siblings.order_by("choice_index").first()
                if other is None:
                    Run.objects.filter(id=message.run_id).update(hidden=True)
                elif message.in_history:
                    Message.objects.filter(id=other.id).update(in_history=True)
            message.delete()
        else:
            for name, value in turn.items():
                setattr(message, name, value)
            message.save()
        return _changed(conv)


@api(methods={"POST": "conversation.write"})
def delete_run(request: HttpRequest, run_id: int) -> JsonResponse:
    """Take an answer (all its choices, or its error) out of the transcript.

    The run itself stays: it is the usage ledger, and the inspector still shows it.
    """
    run = get_object_or_404(Run, id=run_id)
    conv = conversation_for(request.user, run.conversation_id, "conversation.write")
    if run.is_active:
        raise Refused(409, "This answer is still streaming: stop it first.")
    with transaction.atomic():
        Message.objects.filter(run=run).delete()
        Run.objects.filter(id=run.id).update(hidden=True)
        return _changed(conv)


@api(methods={"POST": "conversation.write"}, json=True)
def move_message(request: HttpRequest, message_id: int) -> JsonResponse:
    """Swap a turn (with its sibling choices) with the one above or below it."""
    message, conv = _message_for(request, message_id)
    direction = request.json().get("direction")
    if direction not in ("up", "down"):
        return json_error(400, "direction: must be up or down", fields={"direction": "must be up or down"})
    with transaction.atomic():
        conv = _lock(conv)
        here = message.position
        neighbours = conv.messages.exclude(position=here).exclude(position=0, role=Message.Role.SYSTEM)
        if direction == "up":
            other = neighbours.filter(position__lt=here).aggregate(p=Max("position"))["p"]
        else:
            below = neighbours.filter(position__gt=here).order_by("position")
            other = below.values_list("position", flat=True).first()
        if other is None or (direction == "up" and other == 0):
            return json_error(400, f"This turn is already at the {'top' if direction == 'up' else 'bottom'}.")
        mine = list(conv.messages.filter(position=here).values_list("id", flat=True))
        theirs = list(conv.messages.filter(position=other).values_list("id", flat=True))
        Message.objects.filter(id__in=mine).update(position=other)
        Message.objects.filter(id__in=theirs).update(position=here)
        # A run's answer is drawn at the run's position: keep the two together.
        Run.objects.filter(conversation=conv, messages__id__in=mine).update(position=other)
        Run.objects.filter(conversation=conv, messages__id__in=theirs).update(position=here)
        return _changed(conv)


@api(methods={"POST": "conversation.write"})
def choose_message(request: HttpRequest, message_id: int) -> JsonResponse:
    """Of a run's n choices, this one continues the conversation."""
    message, conv = _message_for(request, message_id)
    if message.run_id is None:
        return json_error(400, "Only an answer with several choices has a choice to make.")
    with transaction.atomic():
        Message.objects.filter(run_id=message.run_id).update(in_history=False)
        Message.objects.filter(id=message.id).update(in_history=True)
        return _changed(conv)


@api(methods={"POST": "conversation.fork"}, json=True)
def fork_conversation(request: HttpRequest, conversation_id: int) -> JsonResponse:
    """A new conversation holding this one's turns up to and including a message."""
    conv = conversation_for(request.user, conversation_id, "conversation.fork")
    wanted = request.json().get("message")
    message = Message.objects.filter(id=wanted, conversation=conv).first() if is_id(wanted) else None
    if message is None:
        return json_error(400, "message: not a message of this conversation", fields={"message": "not found"})
    with transaction.atomic():
        fork = Conversation.objects.create(
            workspace_id=conv.workspace_id,
            creator=request.user,
            title=f"{conv.title} (fork)"[:200],
            visibility=Conversation.Visibility.PRIVATE,
        )
        kept = conv.messages.filter(position__lte=message.position, in_history=True)
        Message.objects.bulk_create(
            Message(
                conversation=fork,
                position=m.position,
                role=m.role,
                content=m.content,
                name=m.name,
                tool_calls=m.tool_calls,
                tool_call_id=m.tool_call_id,
                reasoning=m.reasoning,
            )
            for m in kept
        )
    return JsonResponse(fork.to_dict(), status=201)
