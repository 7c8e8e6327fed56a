"""The database side of a run: its final write, its usage, and runs left by a dead process."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Collection
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Q
from django.utils import timezone

from playground.models import Conversation, Message, Run
from playground.relay import events
from playground.schema_verdicts import output_checks
from playground.tokens import count_prompt_tokens, count_tokens
from playground.upstream.accumulate import Accumulator

log = logging.getLogger(__name__)

INTERRUPTED_MESSAGE = (
    "The server process running this answer stopped before it finished; the text saved up to then is kept."
)

# What the end of a run writes; the rest of the row (hidden, position…) is left as it is.
FINAL_FIELDS = [
    "status",
    "output",
    "finish_reasons",
    "last_seq",
    "finished_at",
    "first_byte_at",
    "first_token_at",
    "first_reasoning_at",
    "first_content_at",
    "response_status",
    "response_headers",
    "raw_frames",
    "frames_dropped",
    "decode_errors",
    "error_kind",
    "error_message",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "reasoning_tokens",
    "cached_tokens",
    "usage_estimated",
    "cost_usd",
    "checks",
]

# What the keeper's checkpoint writes of a streaming run (RunHandle.checkpoint_state).
CHECKPOINT_FIELDS = [
    "status",
    "output",
    "last_seq",
    "first_byte_at",
    "first_token_at",
    "first_reasoning_at",
    "first_content_at",
    "heartbeat_at",
]


def record_usage(run: Run, acc: Accumulator, reached: bool = True) -> None:
    """Usage as reported by the relay, else an estimate flagged as estimated; none at all
    (no tokens, hence no cost) when the request never `reached` the relay."""
    if not reached:
        run.prompt_tokens = run.completion_tokens = run.total_tokens = None
        run.reasoning_tokens = run.cached_tokens = None
        run.usage_estimated = False
        return
    reported = acc.usage
    if reported and reported.completion_tokens is not None:
        run.prompt_tokens = reported.prompt_tokens
        run.completion_tokens = reported.completion_tokens
        run.total_tokens = reported.total_tokens
        if run.total_tokens is None and reported.prompt_tokens is not None:
            run.total_tokens = reported.prompt_tokens + reported.completion_tokens
        run.reasoning_tokens = reported.reasoning_tokens
        run.cached_tokens = reported.cached_tokens
        run.usage_estimated = False
        return
    run.prompt_tokens = count_prompt_tokens(run.request_body.get("messages") or [])
    run.completion_tokens = sum(count_tokens(c["content"]) + count_tokens(c["reasoning"]) for c in run.output)
    run.total_tokens = run.prompt_tokens + run.completion_tokens
    run.usage_estimated = True


def save_answer(run: Run) -> list[Message]:
    """Write the final run (FINAL_FIELDS), with the verdicts on its output, and its answer
    (one message per choice; the first continues the conversation), in one transaction.

    Raises DatabaseError when the run's row is gone. A run whose conversation was deleted
    stays in the ledger with no messages (returns []). The messages come back with their
    ids, in transcript order.
    """
    run.checks = output_checks(run.request_body, run.output)
    messages = [
        Message(
            conversation_id=run.conversation_id,
            position=run.position,
            role=Message.Role.ASSISTANT,
            content=choice["content"],
            reasoning=choice["reasoning"],
            tool_calls=choice["tool_calls"],
            run=run,
            choice_index=choice["index"],
            in_history=choice["index"] == min(c["index"] for c in run.output),
        )
        for choice in run.output
        if choice["content"] or choice["tool_calls"] or choice["reasoning"]
    ]
    final = {name: getattr(run, name) for name in FINAL_FIELDS}
    with transaction.atomic():
        if not Run.objects.filter(id=run.id).update(**final):
            raise DatabaseError(f"run {run.id} is gone: its final state was not stored")
        # A deleted conversation leaves its runs in the ledger, with no transcript to add
        # to. The UPDATE locks its row until the commit: it is not deleted under the
        # messages.
        touched = run.conversation_id is not None and Conversation.objects.filter(
            id=run.conversation_id
        ).update(updated_at=timezone.now())
        if not touched:
            return []
        Message.objects.bulk_create(messages)
    if connection.features.can_return_rows_from_bulk_insert:
        return messages
    return list(Message.objects.filter(run=run))


def interrupt_stale_runs(running_here: Collection[int], publish: Callable[[str, dict], None]) -> list[Run]:
    """Mark runs whose owning process stopped beating as interrupted, keeping their text;
    `publish(group, event)` sends each one's run.done. Runs in `running_here` (this
    process's) are left alone.

    Safe to run in every process at any time: a run is only touched once its
    heartbeat is older than PLAYGROUND_STALE_AFTER_SECONDS, and the conditional
    update lets exactly one process claim it.
    """
    cutoff = timezone.now() - timedelta(seconds=settings.RELAY_STALE_AFTER_SECONDS)
    stale = Run.objects.filter(status__in=Run.ACTIVE).filter(
        Q(heartbeat_at__lt=cutoff) | Q(heartbeat_at__isnull=True, submitted_at__lt=cutoff)
    )
    done = []
    for run in stale.exclude(id__in=list(running_here)):
        claimed = Run.objects.filter(id=run.id, status__in=Run.ACTIVE, heartbeat_at=run.heartbeat_at)
        if not claimed.update(status=Run.Status.INTERRUPTED):
            continue
        run.status = Run.Status.INTERRUPTED
        run.finished_at = timezone.now()
        run.error_kind, run.error_message = "interrupted", INTERRUPTED_MESSAGE
        run.finish_reasons = [c.get("finish_reason") for c in run.output]
        run.last_seq += 1
        record_usage(run, Accumulator())
        messages = save_answer(run)
        publish(events.group_of(run.conversation_id), events.run_done(run, messages))
        by = run.user.get_username() if run.user else None
        publish(
            events.workspace_group(run.conversation.workspace_id),
            events.conversation_listed(run.conversation, "run.done", by),
        )
        log.info("run %s was left streaming by a stopped process; marked interrupted", run.id)
        done.append(run)
    return done


def checkpoint(states: list[tuple[int, dict]]) -> None:
    """Store each (run id, CHECKPOINT_FIELDS values) in one transaction, only for runs
    still active: a run's own final write is never overwritten.

    The one write of the playground not made through the ORM: one UPDATE statement
    executed for all runs (`executemany`), its parameters each field's
    `get_db_prep_save`, prepared before the transaction begins, as on SQLite every
    writer waits for this one. Why not the ORM's bulk_update: docs/storage-and-relay.md.
    """
    fields = [Run._meta.get_field(name) for name in CHECKPOINT_FIELDS]
    rows = [
        [f.get_db_prep_save(state[f.name], connection) for f in fields] + [run_id, *Run.ACTIVE]
        for run_id, state in states
    ]
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(f.column)} = %s" for f in fields)
    active = ", ".join(["%s"] * len(Run.ACTIVE))
    sql = f"UPDATE {quote(Run._meta.db_table)} SET {assignments} WHERE id = %s AND status IN ({active})"
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def settle_connection() -> None:
    """Before and after a run, on its relay thread: keep the database connection, or let go.

    A server database (PostgreSQL) gets its connection back: the pool has up to
    PLAYGROUND_MAX_STREAMS threads, and as many idle connections would crowd the
    server. An SQLite connection (a file handle in this process) is kept for the
    thread's next run, and checked as Django does around a request: closed once
    unusable or older than CONN_MAX_AGE.
    """
    if connection.vendor == "sqlite" and connection.connection is not None:
        try:
            connection.close_if_unusable_or_obsolete()
            return
        except Exception:  # e.g. it cannot even say whether it is in autocommit: drop it
            pass
    with contextlib.suppress(Exception):
        connection.close()
