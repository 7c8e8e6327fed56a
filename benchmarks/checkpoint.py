"""The keeper's checkpoint of N active runs: three ways to write it, timed.

    .venv/bin/python benchmarks/checkpoint.py [--runs 50,200] [--repeat 7] [--chars 2000]

DATABASE_URL picks the database (SQLite in a temporary file when unset); it is
migrated, and the runs it creates are deleted at the end. Each round writes the
same states (status, output with `--chars` of text, seq, first-token times,
heartbeat) of N streaming runs in one transaction:

- executemany: one UPDATE executed for all runs, its parameters from each field's
  get_db_prep_save (playground.relay.store.checkpoint)
- bulk_update: `Run.objects.filter(status__in=ACTIVE).bulk_update(...)`
- update: one `QuerySet.update()` per run

Prints milliseconds per checkpoint: median, min and max of the rounds, the
methods interleaved round by round.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", default="50,200")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--chars", type=int, default=2000)
    args = parser.parse_args()

    if not os.environ.get("DATABASE_URL"):
        os.environ["DATABASE_URL"] = f"sqlite:///{tempfile.mkdtemp()}/checkpoint.sqlite3"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "playground.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, transaction
    from django.utils import timezone

    from playground.models import Conversation, Run, Workspace
    from playground.relay.store import CHECKPOINT_FIELDS, checkpoint

    call_command("migrate", verbosity=0)
    workspace = Workspace.objects.create(name="bench", slug=f"bench-{time.time_ns()}")
    conversation = Conversation.objects.create(workspace=workspace)

    def states_of(ids: list[int], round_: int) -> list[tuple[int, dict]]:
        now = timezone.now()
        text = ("word " * args.chars)[: args.chars - 1] + str(round_ % 10)
        choice = {
            "index": 0,
            "content": text,
            "reasoning": "",
            "tool_calls": None,
            "logprobs": None,
            "finish_reason": None,
        }
        state = {
            "status": Run.Status.STREAMING,
            "output": [choice],
            "last_seq": round_,
            "first_byte_at": now,
            "first_token_at": now,
            "first_reasoning_at": None,
            "first_content_at": now,
            "heartbeat_at": now,
        }
        return [(run_id, dict(state)) for run_id in ids]

    def by_bulk_update(states: list[tuple[int, dict]]) -> None:
        rows = [Run(id=run_id, **state) for run_id, state in states]
        with transaction.atomic():
            Run.objects.filter(status__in=Run.ACTIVE).bulk_update(rows, CHECKPOINT_FIELDS)

    def by_update(states: list[tuple[int, dict]]) -> None:
        with transaction.atomic():
            for run_id, state in states:
                Run.objects.filter(id=run_id, status__in=Run.ACTIVE).update(**state)

    methods = {"executemany": checkpoint, "bulk_update": by_bulk_update, "update": by_update}
    print(f"database: {connection.vendor}, {args.chars} characters of text per run, {args.repeat} rounds")
    try:
        for n in [int(x) for x in args.runs.split(",")]:
            runs = Run.objects.bulk_create(
                [Run(conversation=conversation, model="m", status=Run.Status.STREAMING) for _ in range(n)]
            )
            ids = [run.id for run in runs]
            times: dict[str, list[float]] = {name: [] for name in methods}
            for round_ in range(args.repeat + 1):  # the first round warms up
                for name, method in methods.items():
                    states = states_of(ids, round_)
                    started = time.perf_counter()
                    method(states)
                    elapsed = (time.perf_counter() - started) * 1000
                    if round_:
                        times[name].append(elapsed)
            stored = Run.objects.filter(id__in=ids, last_seq=args.repeat).count()
            assert stored == n, f"{stored} of {n} runs written"
            for name, values in times.items():
                print(
                    f"{n:4d} runs  {name:12s} median {statistics.median(values):7.2f} ms"
                    f"  min {min(values):7.2f}  max {max(values):7.2f}"
                )
            Run.objects.filter(id__in=ids).delete()
    finally:
        conversation.delete()
        workspace.delete()


if __name__ == "__main__":
    main()
