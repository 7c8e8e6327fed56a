"""Reading the websocket protocol as a browser does."""

from playground.relay import events as protocol


def text_of(events: list[dict], run_id: int, index: int = 0) -> str:
    """What a browser shows for one choice: the snapshot's text plus later deltas, repeats dropped."""
    text, seq = "", 0
    for event in events:
        if event["type"] == protocol.SNAPSHOT and event["run"]["id"] == run_id:
            choices = [c for c in event["run"]["choices"] if c["index"] == index]
            text, seq = (choices[0]["content"] if choices else ""), event["run"]["seq"]
        elif event["type"] == protocol.RUN_DELTA and event["run"] == run_id and event["seq"] > seq:
            text += "".join(c.get("content", "") for c in event["choices"] if c["index"] == index)
            seq = event["seq"]
    return text


def delta_count(events: list[dict]) -> int:
    return sum(event["type"] == protocol.RUN_DELTA for event in events)
