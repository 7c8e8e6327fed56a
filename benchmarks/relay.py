"""Relay overhead: K concurrent streams through the whole stack vs. the same server read directly.

    .venv/bin/python benchmarks/relay.py [--streams 1,10,50,100] [--rate 50] [--chunks 200]
                                         [--ramp 1.0] [--repeat 1] [--fast-paths all]
                                         [--processes 1] [--layer memory|redis] [--db sqlite|postgres]
                                         [--save figures.json]
    … --ablate [--only none,gil_switch] --streams 50 --repeat 3   all vs all-minus-each fast path
    … --burst [--profile] --streams 50 --chunks 20 --repeat 3     K submissions at once, paths on/off

Modes
-----
Plain: one row per K (and per repeat, going round the K values), as described below.
--processes N (with --layer redis; PostgreSQL by default then): N Daphne processes on one
database and one Redis; stream i submits to and listens on process i mod N. PostgreSQL is the
database in --pg-url, dropped and created anew; Redis the database in --redis-url, emptied.
--ablate: for each fast-path name, "all but that name" against "all", and "none" against
"all", at the first K: --repeat rounds, each running every configuration's pair in turn (all
first in even rounds, second in odd ones), each pair sharing one direct phase; a table of
medians, ranges, differences and a verdict against the spread of every "all" run.
--burst: for each K and round, a fresh server with fast paths on (all) and one with them off
(none): IDLE_SUBMISSIONS runs one at a time, then K runs whose requests are written within a
few ms on connections opened beforehand; the submissions' answer times and the runs' TTFT.
--profile samples the first Daphne process with py-spy meanwhile (pip install py-spy).
The servers run with no per-user or per-workspace cap on active runs (one user submits them
all) and a relay pool larger than K.

Method
------
An upstream SSE server runs in its own process (this file with `--serve-upstream`, stdlib
asyncio), so its CPU is charged to no one measured. Every POST .../chat/completions gets
`max_tokens` chunks in the seed-relay shape, chunked transfer encoding: the first at once,
then one every 1/R s (each stream with a random phase, so K streams do not tick in lockstep),
then a finish chunk, a usage chunk and `data: [DONE]`. Each chunk's content is a marker
`⟦i@t⟧`: its index and the time.time() just before it was written (one machine, one clock).

For each K, one phase after the other, against the same server:
1. direct: asyncio readers POST to the server and parse the SSE themselves (the floor);
2. stack: a fresh Daphne process (tests.servers.AppServer, DEBUG off; SQLite + in-memory
   layer, or PostgreSQL + Redis with --redis) whose "Bench" provider points at the server;
   one warm-up run; then a conversation and a websocket client (session cookie and Origin,
   as a browser sends them) per stream, and runs submitted through the JSON API.
Both phases start the K streams evenly over --ramp seconds, then, while all K flow, 10
short probe streams one by one: TTFT is measured on the probes, so it is the time to first
token of a request made under K streams of load, not the queue of the ramp itself (which is
reported too, as "TTFT overhead, K starts").

Per-chunk latency = receive time - embedded send time, for every marker, including markers
the relay coalesced into one `run.delta`. Added latency = stack percentile - direct
percentile (a difference of percentiles, not a percentile of differences). The targets
apply to all chunks; "all K flowing" takes only the chunks written between the last
stream's first chunk and the first stream's last: the ramp's K submissions are not in it.
TTFT = first marker received - request start (direct: its POST; stack: the submit POST);
the stack's TTFT is also split at the time its first marker was written upstream: before
it, the submission and the relay's request; after it, the chunk's way through the relay.
CPU per chunk = Daphne's user+sys CPU (/proc/<pid>/stat) from the first submit to the last
`run.done`, over chunks relayed; "direct" is this process's CPU over the direct phase.
RSS per stream = (peak Daphne RSS while streaming - RSS before the K sockets opened) / K.
Other load = CPU used meanwhile by every process but Daphne, the upstream and this one:
on a shared machine it says how far to trust the rest of the row.
Correctness: every stream must deliver its markers exactly once and in order, and (stack)
end with a `run.done` whose status is "completed" and whose text holds every marker.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import json
import math
import os
import random
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

from tests.fakes import chunk, frames, usage_chunk  # noqa: E402
from tests.servers import AppServer, Client, base_env, manage  # noqa: E402

MARKER = re.compile(r"⟦(\d+)@(\d+\.\d+)⟧")
PROVIDER = "Bench"
PROBES, PROBE_CHUNKS = 10, 5
TICKS = os.sysconf("SC_CLK_TCK")
PG_URL = "postgres://postgres@127.0.0.1:5432/h_bench"
REDIS_URL = "redis://127.0.0.1:6379/5"
TARGET_K, TARGET_RATE = 50, 50.0
TARGETS = {"added p50": 2.0, "added p99": 25.0, "TTFT overhead p50": 30.0}  # ms
NOISY_CORES = 0.25  # other processes' load above which a row's figures are suspect


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- upstream server


async def serve_upstream(rate: float) -> None:
    """Serve chat completions at `rate` chunks/s per stream; print the port, then serve."""
    server = await asyncio.start_server(
        lambda reader, writer: answer_requests(reader, writer, rate), "127.0.0.1", 0
    )
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


async def answer_requests(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rate: float) -> None:
    try:
        while (request := await read_request(reader)) is not None:
            path, body = request
            if path.endswith("/chat/completions"):
                await stream_answer(writer, int(body.get("max_tokens") or 20), rate)
            else:
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    except (ConnectionError, asyncio.IncompleteReadError):
        pass  # the client went away mid-answer
    finally:
        writer.close()


async def read_request(reader: asyncio.StreamReader) -> tuple[str, dict] | None:
    """(path, JSON body) of the next request on a keep-alive connection; None at EOF."""
    try:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    except asyncio.IncompleteReadError:
        return None
    lines = head.split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    length = int(headers.get("content-length") or 0)
    body = await reader.readexactly(length) if length else b""
    return lines[0].split(" ")[1], json.loads(body or b"{}")


async def stream_answer(writer: asyncio.StreamWriter, count: int, rate: float) -> None:
    writer.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    loop = asyncio.get_running_loop()
    start, phase = loop.time(), random.random() / rate
    for i in range(count):
        if i:
            await asyncio.sleep(max(0.0, start + phase + i / rate - loop.time()))
        role = "assistant" if i == 0 else None
        write_chunk(writer, frames([chunk(f"⟦{i}@{time.time():.6f}⟧ ", role=role)], done=False))
        await writer.drain()
    write_chunk(writer, frames([chunk(finish="stop"), usage_chunk(5, count)]))
    writer.write(b"0\r\n\r\n")
    await writer.drain()


def write_chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")


class Upstream:
    """The upstream server, in its own process."""

    def __init__(self, rate: float) -> None:
        self.rate = rate

    def __enter__(self) -> Upstream:
        command = [sys.executable, __file__, "--serve-upstream", "--rate", str(self.rate)]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        self.port = int(self.proc.stdout.readline())
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(10)


# ---------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Start:
    """One stream of a phase: when it starts (s after the phase does), how many chunks."""

    delay: float
    chunks: int
    probe: bool = False


def plan(k: int, chunks: int, rate: float, ramp: float, probes: int = PROBES) -> list[Start]:
    """K streams over the ramp, then probes spread over the time all K flow together."""
    starts = [Start(i * ramp / k, chunks) for i in range(k)]
    steady = chunks / rate - ramp  # from the last start until the first stream ends
    if probes and steady >= 1.0:
        spacing = steady / probes
        starts += [Start(ramp + (i + 0.5) * spacing, PROBE_CHUNKS, True) for i in range(probes)]
    return starts


def deadline(starts: list[Start], rate: float) -> float:
    return max(s.delay + s.chunks / rate for s in starts) + 60


async def finish(coroutines: list[Coroutine], timeout: float) -> None:
    """Run them all; cancel those still running at the deadline (their streams stay unfinished)."""
    tasks = [asyncio.create_task(coroutine) for coroutine in coroutines]
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [result for result in results if isinstance(result, Exception)]
    if errors:
        raise errors[0]


# ---------------------------------------------------------------------------- measurements


@dataclass
class Stream:
    """What one reader saw of one stream. Times are time.time() seconds."""

    start: Start
    started: float = 0.0
    first_marker: float | None = None
    first_sent: float | None = None  # when the upstream wrote that marker
    latencies: list[float] = field(default_factory=list)  # ms, one per marker received
    sent: list[float] = field(default_factory=list)  # when the upstream wrote each of them
    indices: list[int] = field(default_factory=list)
    status: str = "unfinished"
    final_markers: int | None = None  # markers in run.done's text (stack only)
    # Stack only, as a browser tab follows its run (static/js/lib/conversation-socket.js):
    run_id: int | None = None
    seq: int = 0  # of the last delta or snapshot shown
    closes: list[int | None] = field(default_factory=list)  # codes of the sockets that closed
    healed: int = 0  # markers first shown by a snapshot, run.done or the stored run, not a delta

    def record(self, text: str, received: float) -> None:
        for index, sent in MARKER.findall(text):
            self._shown(int(index), float(sent), received)

    def heal(self, text: str, received: float) -> None:
        """A full state (snapshot, run.done, the stored run): the markers not yet shown are
        shown now, as a browser shows the state's text in place of its own."""
        seen = set(self.indices)
        for index, sent in MARKER.findall(text):
            if int(index) not in seen:
                self.healed += 1
                self._shown(int(index), float(sent), received)

    def _shown(self, index: int, sent: float, received: float) -> None:
        self.indices.append(index)
        self.latencies.append((received - sent) * 1000)
        self.sent.append(sent)
        if self.first_marker is None:
            self.first_marker, self.first_sent = received, sent

    def apply(self, event: dict, received: float) -> bool:
        """One websocket event, as the browser's RunLedger and page take it; True once the
        run is final (run.done)."""
        kind = event["type"]
        if kind == "run.started":
            self.run_id = event["run"]["id"]
        elif kind == "run.delta" and event["seq"] > self.seq:  # a repeat is dropped
            self.seq = event["seq"]
            for choice in event["choices"]:
                self.record(choice.get("content") or "", received)
        elif kind == "snapshot" and event["run"]["seq"] >= self.seq:
            self.run_id, self.seq = event["run"]["id"], event["run"]["seq"]
            self.heal(run_text(event["run"]), received)
        elif kind == "run.done":
            self.end(event["run"], received)
            return True
        return False

    def end(self, run: dict, received: float) -> None:
        """The run's final state (run.done, or the stored run read after a reconnect)."""
        error = f" ({run['error']['message']})" if run["error"] else ""
        self.status = run["status"] + error
        text = run_text(run)
        self.final_markers = len(MARKER.findall(text))
        self.heal(text, received)

    @property
    def ttft(self) -> float | None:
        return None if self.first_marker is None else (self.first_marker - self.started) * 1000

    @property
    def ttft_upstream(self) -> float | None:
        """The part of the TTFT before the upstream wrote its first chunk."""
        return None if self.first_sent is None else (self.first_sent - self.started) * 1000

    def problems(self) -> list[str]:
        """What a browser following the stream would have got wrong (a resync from a
        snapshot after a close is not wrong: Phase.resyncs reports those)."""
        expected, seen = self.start.chunks, set(self.indices)
        found = []
        if len(seen) < expected:
            found.append(f"lost {expected - len(seen)}")
        if len(self.indices) > len(seen):
            found.append(f"repeated {len(self.indices) - len(seen)}")
        if self.indices != sorted(self.indices):
            found.append("out of order")
        if self.status != "completed":
            found.append(f"status {self.status}")
        if self.final_markers not in (None, expected):
            found.append(f"final text holds {self.final_markers}/{expected} markers")
        return found


@dataclass
class Phase:
    streams: list[Stream]
    cpu_seconds: float  # of the process measured (Daphne, or this one for direct)
    other_cores: float  # average CPU of every other process on the machine
    steal_cores: float  # average CPU the hypervisor gave other machines (steal time)
    rss_growth: int = 0  # bytes

    @property
    def chunks(self) -> int:
        return sum(len(set(s.indices)) for s in self.streams)

    @property
    def expected(self) -> int:
        return sum(s.start.chunks for s in self.streams)

    @property
    def latencies(self) -> list[float]:
        return [value for s in self.streams for value in s.latencies]

    def latencies_while_all_flow(self) -> list[float]:
        """Those of chunks written while all K streams flowed: after the last one's first
        chunk, before the first one's last (the probes count, but do not set the bounds)."""
        main = [s for s in self.streams if not s.start.probe and s.sent]
        if not main:
            return []
        begin, end = max(s.sent[0] for s in main), min(s.sent[-1] for s in main)
        pairs = ((t, ms) for s in self.streams for t, ms in zip(s.sent, s.latencies, strict=True))
        return [ms for t, ms in pairs if begin <= t <= end]

    def ttfts(self, probes: bool, upstream: bool = False) -> list[float]:
        values = (s.ttft_upstream if upstream else s.ttft for s in self.streams if s.start.probe == probes)
        return [value for value in values if value is not None]

    def cpu_per_chunk(self) -> float:
        return self.cpu_seconds / self.chunks * 1e6 if self.chunks else math.nan

    def problems(self) -> list[str]:
        found = ((i, s.problems()) for i, s in enumerate(self.streams))
        return [f"stream {i}: {', '.join(p)}" for i, p in found if p]

    @property
    def healed(self) -> int:
        return sum(s.healed for s in self.streams)

    def resyncs(self) -> str:
        """The sockets that closed and reconnected, by close code, and the markers first shown
        by a snapshot or the final state rather than a delta; empty when none did."""
        codes = [code for s in self.streams for code in s.closes]
        if not codes:
            return ""
        by_code = ", ".join(f"{code}×{codes.count(code)}" for code in sorted(set(codes), key=str))
        streams = sum(bool(s.closes) for s in self.streams)
        healed = f"{self.healed} chunks shown from a snapshot"
        return f"{streams} streams resynced after a close ({by_code}); {healed}"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; NaN when there is nothing to rank."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def cpu_seconds(pid: int) -> float:
    """user + sys CPU of a process and all its threads, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def machine_seconds() -> tuple[float, float]:
    """CPU seconds the whole machine spent busy (all cores), and stolen by the hypervisor."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq) / TICKS, steal / TICKS


class CpuWindow:
    """CPU used from creation to stop(): by each of `pids`, by this process, by all else."""

    def __init__(self, *pids: int) -> None:
        self.pids = pids
        self.start = self.sample()

    def sample(self) -> list[float]:
        own = [time.monotonic(), *machine_seconds(), time.process_time()]
        return own + [cpu_seconds(pid) for pid in self.pids]

    def stop(self) -> CpuWindow:
        end = self.sample()
        deltas = (b - a for a, b in zip(self.start, end, strict=True))
        wall, machine, steal, self.own, *self.by_pid = deltas
        self.other_cores = (machine - self.own - sum(self.by_pid)) / wall
        self.steal_cores = steal / wall
        return self


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass
class PeakRss:
    stack: Stack
    value: int = 0

    async def track(self) -> None:
        while True:
            self.value = max(self.value, self.stack.rss())
            await asyncio.sleep(0.05)


# ---------------------------------------------------------------------------- direct readers


async def run_direct(upstream: Upstream, starts: list[Start]) -> Phase:
    streams = [Stream(start) for start in starts]
    cpu = CpuWindow(upstream.proc.pid)
    await finish([read_direct(upstream, s) for s in streams], deadline(starts, upstream.rate))
    cpu.stop()
    return Phase(streams, cpu.own, cpu.other_cores, cpu.steal_cores)


async def read_direct(upstream: Upstream, stream: Stream) -> None:
    await asyncio.sleep(stream.start.delay)
    stream.started = time.time()
    reader, writer = await asyncio.open_connection("127.0.0.1", upstream.port)
    body = json.dumps({"model": "bench", "stream": True, "max_tokens": stream.start.chunks})
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n{body}".encode()
    )
    try:
        await reader.readuntil(b"\r\n\r\n")  # our own server: 200, chunked
        stream.status = await read_events(reader, stream)
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        stream.status = f"broken ({exc!r})"
    finally:
        writer.close()


async def read_events(reader: asyncio.StreamReader, stream: Stream) -> str:
    """De-chunk and parse SSE, recording markers at the time their bytes arrived."""
    pending = b""
    while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
        pending += (await reader.readexactly(size + 2))[:-2]
        received = time.time()
        *events, pending = pending.split(b"\n\n")
        for event in events:
            data = event.removeprefix(b"data: ")
            if data == b"[DONE]":
                return "completed"
            for choice in json.loads(data)["choices"]:
                stream.record(choice["delta"].get("content") or "", received)
    return "no [DONE]"


# ---------------------------------------------------------------------------- through the stack


@dataclass
class Stack:
    """One or more Daphne processes on one database; stream i goes to server i mod n."""

    servers: list[AppServer]
    client: Client
    provider: int
    upstream: Upstream

    @property
    def pids(self) -> list[int]:
        return [server.proc.pid for server in self.servers]

    def server(self, i: int) -> AppServer:
        return self.servers[i % len(self.servers)]

    def rss(self) -> int:
        return sum(rss_bytes(pid) for pid in self.pids)


def provider_id(client: Client, name: str) -> int:
    page = client.get("/").text
    found = re.search(r'id="playground-config" type="application/json">(.*?)</script>', page)
    providers = json.loads(found.group(1))["providers"]
    return next(p["id"] for p in providers if p["name"] == name)


async def run_stack(stack: Stack, starts: list[Start]) -> Phase:
    streams = [Stream(start) for start in starts]
    conversations = [await asyncio.to_thread(stack.client.new_conversation) for _ in starts]
    probes = [s.start.probe for s in streams]
    sockets = await open_sockets(stack, conversations, probes, want=True)
    rss_before = stack.rss()  # the probes' sockets are not the K streams' memory
    sockets.update(await open_sockets(stack, conversations, probes, want=False))
    pairs = list(zip(conversations, streams, strict=True))
    peak = PeakRss(stack, rss_before)
    tracker = asyncio.create_task(peak.track())
    cpu = CpuWindow(*stack.pids, stack.upstream.proc.pid)
    try:
        with ThreadPoolExecutor(len(streams)) as pool:
            runs = [follow(stack, i, sockets[i], c, s, pool) for i, (c, s) in enumerate(pairs)]
            await finish(runs, deadline(starts, stack.upstream.rate))
    finally:
        cpu.stop()
        tracker.cancel()
        await asyncio.gather(*(ws.close() for ws in sockets.values()))
    daphne = sum(cpu.by_pid[: len(stack.pids)])
    return Phase(streams, daphne, cpu.other_cores, cpu.steal_cores, peak.value - rss_before)


async def open_sockets(
    stack: Stack, conversations: list[int], probes: list[bool], want: bool
) -> dict[int, ClientConnection]:
    """Websockets for the streams that are (or are not) probes, by stream position."""
    chosen = [i for i, probe in enumerate(probes) if probe == want]
    opened = await asyncio.gather(*(open_socket(stack, i, conversations[i]) for i in chosen))
    return dict(zip(chosen, opened, strict=True))


async def reconnect(stack: Stack, i: int, conversation: int) -> ClientConnection:
    """A websocket on the conversation, as a browser opens it; its first event is `sync`."""
    server = stack.server(i)
    url = server.url.replace("http://", "ws://") + f"/ws/conversations/{conversation}/"
    return await connect(
        url,
        origin=server.url,
        additional_headers={"Cookie": stack.client.cookie_header},
        proxy=None,
    )


async def open_socket(stack: Stack, i: int, conversation: int) -> ClientConnection:
    ws = await reconnect(stack, i, conversation)
    hello = json.loads(await ws.recv())
    assert hello["type"] == "sync", hello
    return ws


def run_text(run: dict) -> str:
    return "".join(choice["content"] for choice in run["choices"] or [])


# Close codes after which the browser does not reconnect (logged out, access removed).
FINAL_CLOSES = (4401, 4403)
BACKOFF, BACKOFF_MAX = 0.25, 10.0  # s, as the browser's ConversationSocket


async def watch(stack: Stack, i: int, conversation: int, ws: ClientConnection, stream: Stream) -> None:
    """Record a run until its run.done as a browser tab does: a socket that closes (4008: too
    far behind) reconnects with backoff, and the server's sync and snapshot resync it; a run
    that ended while the socket was away is read from the API (the page's refresh)."""
    retry = 0
    try:
        while True:
            try:
                async for message in ws:
                    if stream.apply(json.loads(message), time.time()):
                        return
                code = ws.close_code
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else None
            stream.closes.append(code)
            if code in FINAL_CLOSES:
                stream.status = f"socket closed ({code})"
                return
            await asyncio.sleep(min(BACKOFF_MAX, BACKOFF * 2**retry))
            retry += 1
            ws = await reconnect(stack, i, conversation)
            sync = json.loads(await ws.recv())
            if stream.run_id is not None and stream.run_id not in sync["active"]:
                # It ended while the socket was away: the page reads its stored state.
                run = (await asyncio.to_thread(stack.client.get, f"/api/runs/{stream.run_id}/")).json()
                stream.end(run, time.time())
                return
    finally:
        await ws.close()


async def follow(
    stack: Stack, i: int, ws: ClientConnection, conversation: int, stream: Stream, pool: Executor
) -> None:
    """Submit one run when its time comes, and record it from its websocket until run.done."""
    watcher = asyncio.create_task(watch(stack, i, conversation, ws, stream))
    await asyncio.sleep(stream.start.delay)
    loop = asyncio.get_running_loop()
    try:
        started = await loop.run_in_executor(pool, submit, stack, i, conversation, stream)
        stream.started, stream.run_id = started
    except (RuntimeError, requests.RequestException) as exc:
        watcher.cancel()
        stream.status = f"submit failed ({exc})"
        return
    await watcher


def submit(stack: Stack, i: int, conversation: int, stream: Stream) -> tuple[float, int]:
    """POST one run as a browser tab would (its own connection); returns when it started,
    and the run's id."""
    body = {
        "provider": stack.provider,
        "model": "bench",
        "message": "go",
        "params": {"stream": True, "max_tokens": stream.start.chunks},
    }
    with requests.Session() as session:
        session.cookies.update(stack.client.session.cookies)
        started = time.time()
        url = f"{stack.server(i).url}/api/conversations/{conversation}/runs/"
        response = session.post(url, json=body, headers=stack.client.headers)
    if response.status_code != 201:
        raise RuntimeError(f"HTTP {response.status_code} {response.text[:200]}")
    return started, response.json()["run"]["id"]


def log_anomalies(output: str) -> list[str]:
    """Lines of the Daphne log that say something went wrong (or that the layer dropped)."""
    flags = ("Traceback", "ERROR", "WARNING", "CRITICAL", "Exception", "over capacity")
    return [line for line in output.splitlines() if any(flag in line for flag in flags)]


# ---------------------------------------------------------------------------- one K


@dataclass
class Row:
    k: int
    rate: float
    direct: Phase
    stack: Phase
    log_lines: list[str]
    fast_paths: str = "all"

    def added(self, q: float) -> float:
        return percentile(self.stack.latencies, q) - percentile(self.direct.latencies, q)

    def added_while_all_flow(self, q: float) -> float:
        stack, direct = self.stack.latencies_while_all_flow(), self.direct.latencies_while_all_flow()
        return percentile(stack, q) - percentile(direct, q)

    def ttft(self, phase: Phase, probes: bool = True, upstream: bool = False) -> float:
        return percentile(phase.ttfts(probes, upstream), 50)

    def ttft_overhead(self, probes: bool = True) -> float:
        return self.ttft(self.stack, probes) - self.ttft(self.direct, probes)

    @property
    def has_targets(self) -> bool:
        return self.k == TARGET_K and self.rate == TARGET_RATE

    def misses(self) -> list[str]:
        """Targets missed (empty: all met)."""
        figures = {
            "added p50": self.added(50),
            "added p99": self.added(99),
            "TTFT overhead p50": self.ttft_overhead(),
        }
        return [
            f"{name} {ms(figures[name])} ms > {limit:g} ms"
            for name, limit in TARGETS.items()
            if not figures[name] <= limit
        ]


def server_env(env: dict[str, str], fast_paths: str, args: argparse.Namespace) -> dict[str, str]:
    """The app servers' environment: the fast paths asked for, and no per-user or per-workspace
    cap on active runs (one user submits all K), nor a relay pool smaller than K."""
    return {
        **env,
        "PLAYGROUND_FAST_PATHS": fast_paths,
        "PLAYGROUND_MAX_STREAMS_PER_USER": "0",
        "PLAYGROUND_MAX_STREAMS_PER_WORKSPACE": "0",
        "PLAYGROUND_MAX_STREAMS": str(max(args.streams) + PROBES + 8),
    }


class BenchServer(AppServer):
    """An AppServer that waits longer for its first answer: on a loaded host the readiness
    probe's one-second timeout can pass while Daphne is still loading the app."""

    def start(self) -> BenchServer:
        try:
            try:
                return super().start()
            except requests.Timeout:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    try:
                        requests.get(self.url + "/accounts/login/", timeout=10)
                        return self
                    except requests.RequestException:
                        time.sleep(0.2)
                raise
        except BaseException:
            self.stop()  # not left running: __exit__ is not called when __enter__ raises
            raise


@contextmanager
def running_stack(
    args: argparse.Namespace, upstream: Upstream, env: dict[str, str], fast_paths: str
) -> Iterator[Stack]:
    """`--processes` fresh Daphne processes, logged in, each warmed up with one short run."""
    with ExitStack() as started:
        servers_env = server_env(env, fast_paths, args)
        servers = [started.enter_context(BenchServer(servers_env)) for _ in range(args.processes)]
        client = Client(servers[0].url)
        stack = Stack(servers, client, provider_id(client, PROVIDER), upstream)
        asyncio.run(run_stack(stack, plan(len(servers), 5, args.rate, 0.0, probes=0)))  # warm-up
        yield stack


def stack_log_anomalies(stack: Stack) -> list[str]:
    return [line for server in stack.servers for line in log_anomalies(server.output())]


def measure(
    k: int,
    args: argparse.Namespace,
    upstream: Upstream,
    env: dict[str, str],
    fast_paths: str = "all",
    direct: Phase | None = None,
) -> Row:
    """One row: the direct phase (unless given, e.g. shared by an ablation pair), then the stack."""
    starts = plan(k, args.chunks, args.rate, args.ramp)
    if direct is None:
        log(f"K={k}: direct…")
        direct = asyncio.run(run_direct(upstream, starts))
    log(f"K={k}: through the stack (fast paths: {fast_paths}, {args.processes} process(es))…")
    with running_stack(args, upstream, env, fast_paths) as stack:
        through = asyncio.run(run_stack(stack, starts))
        anomalies = stack_log_anomalies(stack)
    healed = f" ({through.healed} shown from a snapshot after a resync)" if through.healed else ""
    log(f"K={k}: {through.chunks}/{through.expected} chunks{healed}")
    return Row(k, args.rate, direct, through, anomalies, fast_paths)


@contextmanager
def bench_database(args: argparse.Namespace, upstream: Upstream) -> Iterator[dict[str, str]]:
    """A fresh database with the Bench provider; DEBUG off, as in production.

    SQLite: a file in a temporary directory. PostgreSQL: the database named in --pg-url,
    dropped and created anew. Redis layer: the Redis database in --redis-url, emptied, with
    a prefix of this run's own.
    """
    from cryptography.fernet import Fernet

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        env = base_env(
            PLAYGROUND_DATA_DIR=tmp,
            DEBUG="0",
            SECRET_KEY=secrets.token_urlsafe(32),
            PLAYGROUND_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        )
        if args.db == "postgres":
            recreate_postgres(args.pg_url)
            env["DATABASE_URL"] = args.pg_url
        else:
            env["DATABASE_URL"] = f"sqlite:///{tmp}/playground.sqlite3"
        if args.layer == "redis":
            import redis

            redis.Redis.from_url(args.redis_url).flushdb()
            env["REDIS_URL"] = args.redis_url
            env["PLAYGROUND_CHANNEL_PREFIX"] = f"bench-{secrets.token_hex(4)}"
        manage(env, "migrate", "--noinput", "-v0")
        manage(env, "bootstrap")
        manage(
            {**env, "PLAYGROUND_PROVIDER_KEY": "sk-bench-0000"},
            "addprovider",
            PROVIDER,
            "--base-url",
            upstream.base_url,
        )
        yield env


def recreate_postgres(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


# ---------------------------------------------------------------------------- report

HEADER = [
    "K",
    "R (chunks/s)",
    "chunks relayed",
    "direct p50 / p99 ms",
    "stack p50 / p99 ms",
    "added p50 / p99 ms",
    "added p50 / p99 ms, all K flowing",
    "TTFT direct p50 ms",
    "TTFT stack p50 ms",
    "stack TTFT before upstream's chunk 1, p50 ms",
    "TTFT overhead p50 ms",
    "TTFT overhead p50 ms, K starts",
    "CPU µs/chunk Daphne (direct)",
    "RSS MB/stream",
    "other load, cores",
    "steal, cores",
    "targets at K=50",
]


def ms(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.1f}"


def pair(values: list[float]) -> str:
    return f"{ms(percentile(values, 50))} / {ms(percentile(values, 99))}"


def table_row(row: Row) -> str:
    d, s = row.direct, row.stack
    lost = s.expected - s.chunks
    verdict = ("met" if not row.misses() else "MISSED") if row.has_targets else "—"
    cells = [
        str(row.k),
        f"{row.rate:g}",
        f"{s.chunks}/{s.expected}" + (f" ({lost} lost)" if lost else ""),
        pair(d.latencies),
        pair(s.latencies),
        f"{ms(row.added(50))} / {ms(row.added(99))}",
        f"{ms(row.added_while_all_flow(50))} / {ms(row.added_while_all_flow(99))}",
        ms(row.ttft(d)),
        ms(row.ttft(s)),
        ms(row.ttft(s, upstream=True)),
        ms(row.ttft_overhead()),
        ms(row.ttft_overhead(probes=False)),
        f"{s.cpu_per_chunk():.0f} ({d.cpu_per_chunk():.0f})",
        f"{s.rss_growth / row.k / 2**20:.2f}",
        f"{max(0.0, s.other_cores):.2f} ({max(0.0, d.other_cores):.2f})",
        f"{s.steal_cores:.2f} ({d.steal_cores:.2f})",
        verdict,
    ]
    return "| " + " | ".join(cells) + " |"


def setup(args: argparse.Namespace) -> str:
    """The stack measured, in words."""
    db = "PostgreSQL" if args.db == "postgres" else "SQLite"
    layer = "Redis" if args.layer == "redis" else "in-memory layer"
    processes = f"{args.processes} Daphne processes (stream i on process i mod {args.processes})"
    return f"{db} + {layer}; {processes if args.processes > 1 else '1 Daphne process'}"


def conditions(speed: float) -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{os.cpu_count()} CPUs; load average {load} (1, 5, 15 min) at the end; machine speed "
        f"{speed:.2f} µs to decode one chunk (json.loads, best of 5, at the start)."
    )


def report(rows: list[Row], args: argparse.Namespace, speed: float) -> str:
    targets = ", ".join(f"{name} ≤ {limit:g} ms" for name, limit in TARGETS.items())
    lines = [
        f"Relay benchmark: {args.chunks} chunks per stream, the K streams started over "
        f"{args.ramp:g} s, TTFT from {PROBES} probes made while they flow; {setup(args)}; "
        f"fast paths: {args.fast_paths}; {conditions(speed)}",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
        *(table_row(row) for row in sorted(rows, key=lambda row: row.k)),
        "",
        f"Added = stack percentile - direct percentile. Targets (K=50, R=50): {targets}.",
        "Other load: CPU of every process but Daphne, the upstream server and this one"
        + (" (PostgreSQL and Redis included)" if args.db == "postgres" or args.layer == "redis" else "")
        + "; steal: CPU time the hypervisor did not give this machine although it was ready to"
        " run; both for the stack phase (direct phase).",
        "",
    ]
    return "\n".join(lines + findings(rows))


def findings(rows: list[Row]) -> list[str]:
    lines = []
    for row in rows:
        if row.has_targets and row.misses():
            lines.append(f"K={row.k}: missed {'; '.join(row.misses())}.")
        busy = max(row.stack.other_cores, row.direct.other_cores)
        if busy > NOISY_CORES:
            lines.append(f"K={row.k}: other processes used up to {busy:.2f} cores meanwhile.")
        stolen = max(row.stack.steal_cores, row.direct.steal_cores)
        if stolen > NOISY_CORES / 2:
            lines.append(f"K={row.k}: the hypervisor withheld up to {stolen:.2f} cores (steal) meanwhile.")
        for phase, name in ((row.direct, "direct"), (row.stack, "stack")):
            if problems := phase.problems():
                lines.append(f"K={row.k} {name}: {len(problems)} streams wrong: {problems[:5]}")
            if resyncs := phase.resyncs():
                lines.append(f"K={row.k} {name}: {resyncs}.")
        if row.log_lines:
            flagged = f"{len(row.log_lines)} Daphne log lines flagged"
            lines.append(f"K={row.k}: {flagged}: {row.log_lines[:5]}")
    if not any(word in line for line in lines for word in ("wrong", "flagged", "resynced")):
        lines.append("Every chunk arrived exactly once and in order; the Daphne logs are clean.")
    return lines


# ---------------------------------------------------------------------------- figures, saved


def row_figures(row: Row) -> dict:
    """One stack run's figures, as saved with --save and compared by --ablate."""
    return {
        "k": row.k,
        "fast_paths": row.fast_paths,
        "at": time.time(),
        "added_p50": row.added(50),
        "added_p99": row.added(99),
        "added_p99_all_flowing": row.added_while_all_flow(99),
        "ttft_overhead": row.ttft_overhead(),
        "ttft_overhead_k_starts": row.ttft_overhead(probes=False),
        "cpu_per_chunk": row.stack.cpu_per_chunk(),
        "direct_cpu_per_chunk": row.direct.cpu_per_chunk(),
        "chunks": row.stack.chunks,
        "chunks_healed": row.stack.healed,
        "resyncs": sum(len(s.closes) for s in row.stack.streams),
        "expected": row.stack.expected,
        "other_cores": row.stack.other_cores,
        "steal_cores": row.stack.steal_cores,
        "streams_wrong": len(row.stack.problems()),
        "log_lines": len(row.log_lines),
    }


def save(args: argparse.Namespace, figures: list[dict]) -> None:
    if args.save:
        args.save.write_text(json.dumps(figures, indent=1))


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def iqr(values: list[float]) -> float:
    """Interquartile range (0 with fewer than two values)."""
    if len(values) < 2:
        return 0.0
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[2] - q[0]


def span(values: list[float], digits: int = 1) -> str:
    return f"{min(values):.{digits}f}–{max(values):.{digits}f}" if values else "–"


# ---------------------------------------------------------------------------- ablation

ABLATION_METRICS = (
    ("added p99 ms", "added_p99", 1),
    ("TTFT overhead p50 ms", "ttft_overhead", 1),
    ("CPU µs/chunk", "cpu_per_chunk", 0),
)


def fast_path_names() -> list[str]:
    """settings.FAST_PATH_NAMES, read from the source (importing settings makes directories)."""
    tree = ast.parse((ROOT / "playground" / "settings.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            getattr(t, "id", None) == "FAST_PATH_NAMES" for t in node.targets
        ):
            return list(ast.literal_eval(node.value))
    raise RuntimeError("no FAST_PATH_NAMES in playground/settings.py")


def ablation_configs(only: str | None) -> list[tuple[str, str]]:
    """(label, PLAYGROUND_FAST_PATHS): none, then all but each name."""
    names = fast_path_names()
    configs = [("none", "none")] + [(name, ",".join(n for n in names if n != name)) for name in names]
    if only:
        wanted = {name.strip() for name in only.split(",")}
        configs = [config for config in configs if config[0] in wanted]
    return configs


def ablate(args: argparse.Namespace, upstream: Upstream, env: dict[str, str], speed: float) -> str:
    """For each configuration, --repeat pairs (all, configuration) at one K, interleaved: round r
    runs every configuration's pair in turn, "all" first in even rounds and second in odd ones.
    A pair shares one direct phase, measured just before it."""
    k = args.streams[0]
    configs = ablation_configs(args.only)
    pairs: dict[str, list[tuple[dict, dict]]] = {label: [] for label, _ in configs}
    figures: list[dict] = []
    for r in range(args.repeat):
        for label, value in configs:
            direct = asyncio.run(run_direct(upstream, plan(k, args.chunks, args.rate, args.ramp)))
            order = [("all", "all"), (label, value)]
            got = {}
            for name, fast_paths in order[:: -1 if r % 2 else 1]:
                row = measure(k, args, upstream, env, fast_paths, direct)
                got[name] = row_figures(row) | {"config": name, "pair": r, "against": label}
                figures.append(got[name])
            pairs[label].append((got["all"], got[label]))
            save(args, figures)
            a, b = got["all"], got[label]
            log(
                f"round {r + 1}/{args.repeat}, without {label}: added p99 {a['added_p99']:.1f} / "
                f"{b['added_p99']:.1f} ms, TTFT {a['ttft_overhead']:.1f} / {b['ttft_overhead']:.1f} ms, "
                f"CPU {a['cpu_per_chunk']:.0f} / {b['cpu_per_chunk']:.0f} µs (all / without)"
            )
    return ablation_report(args, speed, k, pairs, figures)


def ablation_report(
    args: argparse.Namespace,
    speed: float,
    k: int,
    pairs: dict[str, list[tuple[dict, dict]]],
    figures: list[dict],
) -> str:
    every_all = [f for f in figures if f["config"] == "all"]
    noise = {key: iqr([f[key] for f in every_all]) for _, key, _ in ABLATION_METRICS}
    header = ["without", "pairs"] + [f"{name}: all / without (Δ)" for name, _, _ in ABLATION_METRICS]
    header += ["verdict", "chunks lost / streams wrong"]
    lines = [
        f"Fast-path ablation at K={k}: {args.chunks} chunks per stream at {args.rate:g} chunks/s, the K "
        f"streams started over {args.ramp:g} s; {setup(args)}; {args.repeat} interleaved pairs per row; "
        f"{conditions(speed)}",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for label, runs in pairs.items():
        cells = [label if label == "none" else f"all − {label}", str(len(runs))]
        verdicts = []
        for name, key, digits in ABLATION_METRICS:
            with_all = [a[key] for a, _ in runs]
            without = [b[key] for _, b in runs]
            diffs = [b - a for a, b in zip(with_all, without, strict=True)]
            delta = median(diffs)
            cells.append(
                f"{median(with_all):.{digits}f} ({span(with_all, digits)}) / "
                f"{median(without):.{digits}f} ({span(without, digits)}) ({delta:+.{digits}f})"
            )
            apart = min(without) > max(with_all) or max(without) < min(with_all)
            if abs(delta) > noise[key] and apart:
                verdicts.append(f"{name.split(' ')[0]} {'worse' if delta > 0 else 'better'} without")
        cells.append("moves beyond noise: " + "; ".join(verdicts) if verdicts else "within noise")
        lost = sum(f["expected"] - f["chunks"] for pair in runs for f in pair)
        wrong = sum(f["streams_wrong"] for pair in runs for f in pair)
        cells.append(f"{lost} / {wrong}")
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Cells: median over the pairs (min–max) for all / for the configuration, and Δ = the median of the "
        'pairs\' differences (without − all). Noise: the interquartile range of every "all" run in this '
        f"ablation ({len(every_all)} runs): "
        + "; ".join(
            f"{name} {noise[key]:.{digits}f} (min–max {span([f[key] for f in every_all], digits)})"
            for name, key, digits in ABLATION_METRICS
        )
        + ". A figure moves beyond noise when |Δ| exceeds that IQR and the row's runs do not overlap (every"
        " run without the patch above, or every one below, every run with all). With 3 pairs, runs of one"
        " configuration fall apart so by chance once in 10 (4 pairs: once in 35), so over the rows' 30"
        " comparisons one or two such verdicts may be chance.",
        "Other load during the stack phases: "
        + span([max(0.0, f["other_cores"]) for f in figures], 2)
        + " cores; steal "
        + span([f["steal_cores"] for f in figures], 2)
        + " cores.",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- burst start

IDLE_SUBMISSIONS = 10  # one at a time, each after the previous run's run.done


@dataclass
class Submission:
    sent: float = 0.0
    answered: float | None = None
    status: int | None = None

    @property
    def ms(self) -> float | None:
        return None if self.answered is None else (self.answered - self.sent) * 1000


@dataclass
class Burst:
    submissions: list[Submission]
    streams: list[Stream]
    cpu_seconds: float  # Daphne's, from the first request sent to the last run.done
    other_cores: float

    def times(self) -> list[float]:
        return [s.ms for s in self.submissions if s.ms is not None]

    def ttfts(self, upstream: bool = False) -> list[float]:
        values = (s.ttft_upstream if upstream else s.ttft for s in self.streams)
        return [value for value in values if value is not None]

    def relay_part(self) -> list[float]:
        """TTFT after the upstream wrote the first chunk: its way through the relay."""
        return [(s.first_marker - s.first_sent) * 1000 for s in self.streams if s.first_sent is not None]

    def send_spread(self) -> float:
        sent = [s.sent for s in self.submissions]
        return (max(sent) - min(sent)) * 1000

    def refused(self) -> int:
        return sum(s.status != 201 for s in self.submissions)


def raw_request(stack: Stack, i: int, conversation: int, chunks: int) -> bytes:
    """The submit POST as bytes, to be written at once on a connection opened beforehand."""
    server = stack.server(i)
    body = json.dumps(
        {
            "provider": stack.provider,
            "model": "bench",
            "message": "go",
            "params": {"stream": True, "max_tokens": chunks},
        }
    )
    headers = {
        "Host": f"127.0.0.1:{server.port}",
        "Cookie": stack.client.cookie_header,
        "X-CSRFToken": stack.client.session.cookies["csrftoken"],
        "Referer": server.url,
        "Content-Type": "application/json",
        "Content-Length": str(len(body.encode())),
    }
    head = f"POST /api/conversations/{conversation}/runs/ HTTP/1.1\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return (head + "\r\n" + body).encode()


async def read_response(reader: asyncio.StreamReader, submission: Submission) -> None:
    """Read one HTTP response (Content-Length or chunked); note when its last byte came."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    lines = head.split("\r\n")
    submission.status = int(lines[0].split(" ")[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
            await reader.readexactly(size + 2)
        await reader.readuntil(b"\r\n")
    submission.answered = time.time()


async def run_burst(stack: Stack, k: int, chunks: int) -> Burst:
    """K runs submitted at once: their conversations, websockets and HTTP connections are
    opened first, then the K requests are written one after the other, with no await between."""
    streams = [Stream(Start(0.0, chunks)) for _ in range(k)]
    conversations = [await asyncio.to_thread(stack.client.new_conversation) for _ in range(k)]
    sockets = await open_sockets(stack, conversations, [False] * k, want=False)
    connections = [await asyncio.open_connection("127.0.0.1", stack.server(i).port) for i in range(k)]
    payloads = [raw_request(stack, i, conversations[i], chunks) for i in range(k)]
    submissions = [Submission() for _ in range(k)]
    watchers = [asyncio.create_task(watch(sockets[i], streams[i])) for i in range(k)]
    await asyncio.sleep(0.2)  # the server done with the handshakes
    cpu = CpuWindow(*stack.pids, stack.upstream.proc.pid)
    try:
        for i, (_, writer) in enumerate(connections):
            submissions[i].sent = streams[i].started = time.time()
            writer.write(payloads[i])
        answers = [read_response(reader, submissions[i]) for i, (reader, _) in enumerate(connections)]
        await finish(answers, 120)
        await finish([asyncio.wait_for(watcher, 120) for watcher in watchers], 130)
    finally:
        cpu.stop()
        for _, writer in connections:
            writer.close()
        await asyncio.gather(*(ws.close() for ws in sockets.values()))
    daphne = sum(cpu.by_pid[: len(stack.pids)])
    return Burst(submissions, streams, daphne, cpu.other_cores)


async def run_idle(stack: Stack, chunks: int) -> Burst:
    """IDLE_SUBMISSIONS runs one at a time: a submission's time with nothing else going on."""
    bursts = [await run_burst(stack, 1, chunks) for _ in range(IDLE_SUBMISSIONS)]
    return Burst(
        [s for b in bursts for s in b.submissions],
        [s for b in bursts for s in b.streams],
        sum(b.cpu_seconds for b in bursts),
        median([b.other_cores for b in bursts]),
    )


def burst_figures(k: int, label: str, r: int, idle: Burst, burst: Burst, profile: dict | None) -> dict:
    def pct(values: list[float], q: float) -> float:
        return percentile(values, q)

    problems = [p for s in burst.streams for p in s.problems()]
    return {
        "k": k,
        "fast_paths": label,
        "round": r,
        "at": time.time(),
        "send_spread_ms": burst.send_spread(),
        "refused": burst.refused(),
        "submit_p50": pct(burst.times(), 50),
        "submit_p99": pct(burst.times(), 99),
        "ttft_p50": pct(burst.ttfts(), 50),
        "ttft_p99": pct(burst.ttfts(), 99),
        "before_upstream_p50": pct(burst.ttfts(upstream=True), 50),
        "before_upstream_p99": pct(burst.ttfts(upstream=True), 99),
        "relay_part_p50": pct(burst.relay_part(), 50),
        "relay_part_p99": pct(burst.relay_part(), 99),
        "cpu_ms_per_run": burst.cpu_seconds / k * 1000,
        "other_cores": burst.other_cores,
        "idle_submit_p50": pct(idle.times(), 50),
        "idle_submit_p99": pct(idle.times(), 99),
        "idle_ttft_p50": pct(idle.ttfts(), 50),
        "idle_cpu_ms_per_run": idle.cpu_seconds / len(idle.submissions) * 1000,
        "streams_wrong": len(problems),
        "profile": profile,
    }


def burst(args: argparse.Namespace, upstream: Upstream, env: dict[str, str], speed: float) -> str:
    """For each K and round: a fresh server with fast paths on (all), one with them off (none),
    in alternating order; on each, IDLE_SUBMISSIONS runs one at a time, then the burst."""
    configs = [("on", "all"), ("off", "none")]
    figures: list[dict] = []
    for r in range(args.repeat):
        for k in args.streams:
            for label, fast_paths in configs[:: -1 if r % 2 else 1]:
                log(f"burst K={k}, fast paths {label}, round {r + 1}/{args.repeat}…")
                with running_stack(args, upstream, env, fast_paths) as stack:
                    idle = asyncio.run(run_idle(stack, 2))
                    with sampling(stack, args.profile) as profile:
                        result = asyncio.run(run_burst(stack, k, args.chunks))
                    anomalies = stack_log_anomalies(stack)
                figures.append(burst_figures(k, label, r, idle, result, profile.get("summary")))
                figures[-1]["log_lines"] = len(anomalies)
                save(args, figures)
    return burst_report(args, speed, figures)


BURST_HEADER = [
    "K",
    "fast paths",
    "round",
    "K requests written within, ms",
    "submission answered p50 / p99 ms",
    "idle submission p50 / p99 ms",
    "TTFT p50 / p99 ms",
    "TTFT before upstream's chunk 1, p50 / p99 ms",
    "TTFT after it (relay), p50 / p99 ms",
    "idle TTFT p50 ms",
    "Daphne CPU ms per run, burst (idle)",
    "other load, cores",
    "refused / streams wrong / log lines",
]


def burst_report(args: argparse.Namespace, speed: float, figures: list[dict]) -> str:
    def two(f: dict, a: str, b: str) -> str:
        return f"{ms(f[a])} / {ms(f[b])}"

    lines = [
        f"Burst start: K runs of {args.chunks} chunks at {args.rate:g} chunks/s submitted at once; "
        f"{setup(args)}; {conditions(speed)}",
        "",
        "| " + " | ".join(BURST_HEADER) + " |",
        "|" + "---|" * len(BURST_HEADER),
    ]
    for f in sorted(figures, key=lambda f: (f["k"], f["fast_paths"] != "on", f["round"])):
        cells = [
            str(f["k"]),
            f["fast_paths"],
            str(f["round"] + 1),
            f"{f['send_spread_ms']:.1f}",
            two(f, "submit_p50", "submit_p99"),
            two(f, "idle_submit_p50", "idle_submit_p99"),
            two(f, "ttft_p50", "ttft_p99"),
            two(f, "before_upstream_p50", "before_upstream_p99"),
            two(f, "relay_part_p50", "relay_part_p99"),
            ms(f["idle_ttft_p50"]),
            f"{f['cpu_ms_per_run']:.1f} ({f['idle_cpu_ms_per_run']:.1f})",
            f"{max(0.0, f['other_cores']):.2f}",
            f"{f['refused']} / {f['streams_wrong']} / {f['log_lines']}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Submission answered = request written → last byte of its HTTP response, on a connection opened "
        f"beforehand; idle = {IDLE_SUBMISSIONS} submissions one at a time on the same server just before. "
        "TTFT = request written → first marker on the run's websocket; its part before the upstream wrote "
        "chunk 1 is the submission and the relay's request, the part after is the chunk's way through.",
    ]
    profiles = [f for f in figures if f.get("profile")]
    if profiles:
        lines += ["", *profile_report(profiles)]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- sampling

PROFILE_RATE, PROFILE_SECONDS = 200, 4
# Innermost functions of a thread with nothing to do: a pool's queue, the loop's epoll, the
# keeper's timer, a relay thread waiting for the loop to hand it something.
WAITING_FOR_WORK = {"wait", "get", "_worker", "select", "poll", "doPoll", "_keep", "sleep"}
DATABASE_FRAMES = ("django/db/", "sqlite3", "psycopg")


@contextmanager
def sampling(stack: Stack, enabled: bool) -> Iterator[dict]:
    """py-spy on the first Daphne process for PROFILE_SECONDS from entry, twice at once: every
    thread's samples (--idle) and only those of threads on a CPU. Summarised into
    result["summary"] on exit (an empty dict when not enabled)."""
    result: dict = {}
    if not enabled:
        yield result
        return
    spy = Path(sys.executable).with_name("py-spy")
    files = {
        kind: Path(tempfile.mkstemp(prefix=f"pyspy-{kind}-", suffix=".txt")[1]) for kind in ("all", "busy")
    }
    procs = []
    for kind, path in files.items():
        command = [str(spy), "record", "--pid", str(stack.pids[0]), "--rate", str(PROFILE_RATE)]
        command += ["--duration", str(PROFILE_SECONDS), "--format", "raw", "--threads", "--nonblocking"]
        command += ["-o", str(path)] + (["--idle"] if kind == "all" else [])
        procs.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(0.5)  # attached
    try:
        yield result
    finally:
        for proc in procs:
            proc.wait(PROFILE_SECONDS + 30)
        result["summary"] = summarise_samples(*(read_samples(files[k]) for k in ("all", "busy")))


def read_samples(path: Path) -> list[tuple[str, list[str], int]]:
    """(thread name, frames outermost first, count) per line of py-spy's raw output."""
    samples = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        thread, *calls = stack.split(";")  # "thread (<tid>): <name>", then the frames
        samples.append((thread.split("): ", 1)[-1], calls, int(count)))
    return samples


def thread_role(name: str) -> str:
    if name == "MainThread":
        return "event loop"
    if name.startswith("relay"):
        return "relay threads"
    if name.startswith(("request-", "ThreadPoolExecutor", "asgiref")):
        return "request threads"
    return "other threads"


def sample_state(calls: list[str], busy: bool) -> str:
    if any(marker in call for call in calls for marker in DATABASE_FRAMES):
        return "on CPU in the database driver" if busy else "blocked in the database driver"
    if busy:
        return "on CPU, Python"
    if calls and calls[-1].split(" ")[0].rsplit(".", 1)[-1] in WAITING_FOR_WORK:
        return "waiting for work"
    return "blocked elsewhere (the GIL, I/O)"


def summarise_samples(every: list, busy: list) -> dict:
    """Thread-seconds per role and state. Blocked = sampled (--idle) but not on a CPU."""
    seconds: dict[str, dict[str, float]] = {}

    def add(role: str, state: str, count: int) -> None:
        by_state = seconds.setdefault(role, {})
        by_state[state] = by_state.get(state, 0.0) + count / PROFILE_RATE

    on_cpu: dict[tuple[str, tuple[str, ...]], int] = {}
    for name, calls, count in busy:
        on_cpu[(name, tuple(calls))] = on_cpu.get((name, tuple(calls)), 0) + count
        add(thread_role(name), sample_state(calls, True), count)
    for name, calls, count in every:
        idle = max(0, count - on_cpu.get((name, tuple(calls)), 0))
        if idle:
            add(thread_role(name), sample_state(calls, False), idle)
    return seconds


def profile_report(profiles: list[dict]) -> list[str]:
    states = sorted({state for f in profiles for by in f["profile"].values() for state in by})
    header = ["K", "fast paths", "round", "threads", *states]
    lines = [
        f"py-spy on the first Daphne process for {PROFILE_SECONDS} s from the burst's start "
        f'({PROFILE_RATE} Hz, non-blocking): thread-seconds by state. "Blocked elsewhere" is '
        'mostly a wait for the GIL; "waiting for work" is an idle pool thread.',
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for f in profiles:
        for role, by_state in sorted(f["profile"].items()):
            cells = [str(f["k"]), f["fast_paths"], str(f["round"] + 1), role]
            cells += [f"{by_state.get(state, 0.0):.2f}" for state in states]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


# ---------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--streams", default="1,10,50,100", help="values of K, comma-separated")
    parser.add_argument("--rate", type=float, default=50.0, help="chunks per second per stream")
    parser.add_argument("--chunks", type=int, default=200, help="chunks per stream")
    parser.add_argument("--ramp", type=float, default=1.0, help="seconds to start the K streams")
    parser.add_argument("--repeat", type=int, default=1, help="runs per K, each its own row (spread)")
    parser.add_argument("--fast-paths", default="all", help="PLAYGROUND_FAST_PATHS for the server")
    parser.add_argument(
        "--processes", type=int, default=1, help="Daphne processes (needs --layer redis if > 1)"
    )
    parser.add_argument("--layer", choices=("memory", "redis"), default="memory", help="channel layer")
    parser.add_argument("--db", choices=("sqlite", "postgres"), help="default: postgres with --layer redis")
    parser.add_argument("--redis", action="store_true", help="PostgreSQL + Redis (= --layer redis)")
    parser.add_argument("--pg-url", default=PG_URL, help="PostgreSQL database (dropped and made anew)")
    parser.add_argument("--redis-url", default=REDIS_URL, help="Redis database (emptied)")
    parser.add_argument("--ablate", action="store_true", help="all vs all-minus-each fast path, and none")
    parser.add_argument(
        "--only", help="--ablate: these configurations only (comma list: none, or patch names)"
    )
    parser.add_argument(
        "--burst", action="store_true", help="K submissions within 20 ms, fast paths on and off"
    )
    parser.add_argument("--profile", action="store_true", help="--burst: sample Daphne with py-spy meanwhile")
    parser.add_argument("--save", type=Path, help="also write every run's figures to this JSON file")
    parser.add_argument("--serve-upstream", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.redis:
        args.layer = "redis"
    args.db = args.db or ("postgres" if args.layer == "redis" else "sqlite")
    if args.processes > 1 and args.layer != "redis":
        parser.error("--processes > 1 needs --layer redis (the in-memory layer is per process)")
    k_values = [int(k) for k in args.streams.split(",")]
    # Repeats go round the K values (50, 100, 50, 100…), so a slow minute of the host is not one K's.
    rounds = [k for _ in range(args.repeat) for k in k_values]
    args.streams = k_values if args.ablate or args.burst else rounds
    return args


def machine_speed() -> float:
    """µs this machine takes to decode one seed-shaped chunk and read it (best of 5 runs).

    Figures from different machines (or from one machine on a busy host) compare only
    with this beside them.
    """
    data = json.dumps(chunk("word "))
    best = math.inf
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(20_000):
            json.loads(data)["choices"][0]["delta"].get("content")
        best = min(best, time.perf_counter() - start)
    return best / 20_000 * 1e6


def main() -> None:
    args = parse_args()
    if args.serve_upstream:
        asyncio.run(serve_upstream(args.rate))
        return
    speed = machine_speed()
    with Upstream(args.rate) as upstream, bench_database(args, upstream) as env:
        if args.ablate:
            text = ablate(args, upstream, env, speed)
        elif args.burst:
            text = burst(args, upstream, env, speed)
        else:
            rows = [measure(k, args, upstream, env, args.fast_paths) for k in args.streams]
            save(args, [row_figures(row) for row in rows])
            text = report(rows, args, speed)
    print(text)


if __name__ == "__main__":
    main()
