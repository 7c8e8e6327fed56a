"""Runs one generation: upstream chunks -> run state -> channel-layer events.

- `events`: the event types of a conversation's stream and their builders.
- `handle`: one run in this process (`RunHandle`) and where it goes (`Target`).
- `store`: the run's final write, its usage, and runs a dead process left.
- `control`: what the process owns (`process`: loop, slots, runs, control channel,
  keeper) and the calls that start, stop and look at runs.

The names below are the package's public interface; new code may import them from
their module.
"""

from playground.relay.control import (
    Process,
    RelayBusy,
    ensure_started_from_thread,
    is_stale,
    local_snapshot,
    process,
    publish_from_thread,
    publish_soon,
    reconcile_stale_runs,
    reserve_slot,
    start_run,
    stop_run,
)
from playground.relay.handle import RunHandle, Target
from playground.relay.store import (
    FINAL_FIELDS,
    INTERRUPTED_MESSAGE,
    record_usage,
    save_answer,
    settle_connection,
)

__all__ = [
    "FINAL_FIELDS",
    "INTERRUPTED_MESSAGE",
    "Process",
    "RelayBusy",
    "RunHandle",
    "Target",
    "ensure_started_from_thread",
    "is_stale",
    "local_snapshot",
    "process",
    "publish_from_thread",
    "publish_soon",
    "reconcile_stale_runs",
    "record_usage",
    "reserve_slot",
    "save_answer",
    "settle_connection",
    "start_run",
    "stop_run",
]
