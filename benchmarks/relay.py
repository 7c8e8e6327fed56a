"""Relay overhead: K concurrent streams through the whole stack vs. the same server read directly.

    .venv/bin/python benchmarks/relay.py [--streams 1,10,50,100] [--rate 50] [--chunks 200]
                                         [--ramp 1.0] [--repeat 1] [--redis]

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
import asyncio
import json
import math
import os
import random
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402
from websockets.exceptions import ConnectionClosed  # noqa: E402

from tests.fakes import chunk, frames, usage_chunk  # noqa: E402
from tests.servers import AppServer, Client, app_database, manage  # noqa: E402

MARKER = re.compile(r"⟦(\d+)@(\d+\.\d+)⟧")
PROVIDER = "Bench"
PROBES, PROBE_CHUNKS = 10, 5
TICKS = os.sysconf("SC_CLK_TCK")
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

    def record(self, text: str, received: float) -> None:
        for index, sent in MARKER.findall(text):
            self.indices.append(int(index))
            self.latencies.append((received - float(sent)) * 1000)
            self.sent.append(float(sent))
            if self.first_marker is None:
                self.first_marker, self.first_sent = received, float(sent)

    @property
    def ttft(self) -> float | None:
        return None if self.first_marker is None else (self.first_marker - self.started) * 1000

    @property
    def ttft_upstream(self) -> float | None:
        """The part of the TTFT before the upstream wrote its first chunk."""
        return None if self.first_sent is None else (self.first_sent - self.started) * 1000

    def problems(self) -> list[str]:
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
    pid: int
    value: int = 0

    async def track(self) -> None:
        while True:
            self.value = max(self.value, rss_bytes(self.pid))
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
    server: AppServer
    client: Client
    provider: int
    upstream: Upstream

    @property
    def pid(self) -> int:
        return self.server.proc.pid


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
    rss_before = rss_bytes(stack.pid)  # the probes' sockets are not the K streams' memory
    sockets.update(await open_sockets(stack, conversations, probes, want=False))
    pairs = list(zip(conversations, streams, strict=True))
    peak = PeakRss(stack.pid, rss_before)
    tracker = asyncio.create_task(peak.track())
    cpu = CpuWindow(stack.pid, stack.upstream.proc.pid)
    try:
        with ThreadPoolExecutor(len(streams)) as pool:
            runs = [follow(stack, sockets[i], c, s, pool) for i, (c, s) in enumerate(pairs)]
            await finish(runs, deadline(starts, stack.upstream.rate))
    finally:
        cpu.stop()
        tracker.cancel()
        await asyncio.gather(*(ws.close() for ws in sockets.values()))
    return Phase(streams, cpu.by_pid[0], cpu.other_cores, cpu.steal_cores, peak.value - rss_before)


async def open_sockets(
    stack: Stack, conversations: list[int], probes: list[bool], want: bool
) -> dict[int, ClientConnection]:
    """Websockets for the streams that are (or are not) probes, by stream position."""
    chosen = [i for i, probe in enumerate(probes) if probe == want]
    opened = await asyncio.gather(*(open_socket(stack, conversations[i]) for i in chosen))
    return dict(zip(chosen, opened, strict=True))


async def open_socket(stack: Stack, conversation: int) -> ClientConnection:
    url = stack.server.url.replace("http://", "ws://") + f"/ws/conversations/{conversation}/"
    ws = await connect(
        url,
        origin=stack.server.url,
        additional_headers={"Cookie": stack.client.cookie_header},
        proxy=None,
    )
    hello = json.loads(await ws.recv())
    assert hello["type"] == "sync", hello
    return ws


async def watch(ws: ClientConnection, stream: Stream) -> None:
    """Record a run's deltas until its run.done (or the socket closes)."""
    try:
        async for message in ws:
            received = time.time()
            event = json.loads(message)
            if event["type"] == "run.delta":
                for choice in event["choices"]:
                    stream.record(choice.get("content") or "", received)
            elif event["type"] == "run.done":
                run = event["run"]
                error = f" ({run['error']['message']})" if run["error"] else ""
                stream.status = run["status"] + error
                text = "".join(choice["content"] for choice in run["choices"])
                stream.final_markers = len(MARKER.findall(text))
                return
    except ConnectionClosed as exc:
        stream.status = f"socket closed ({exc.rcvd.code if exc.rcvd else 'no close frame'})"


async def follow(
    stack: Stack, ws: ClientConnection, conversation: int, stream: Stream, pool: Executor
) -> None:
    """Submit one run when its time comes, and record it from its websocket until run.done."""
    watcher = asyncio.create_task(watch(ws, stream))
    await asyncio.sleep(stream.start.delay)
    loop = asyncio.get_running_loop()
    try:
        stream.started = await loop.run_in_executor(pool, submit, stack, conversation, stream)
    except (RuntimeError, requests.RequestException) as exc:
        watcher.cancel()
        stream.status = f"submit failed ({exc})"
        return
    await watcher


def submit(stack: Stack, conversation: int, stream: Stream) -> float:
    """POST one run as a browser tab would (its own connection); returns when it started."""
    body = {
        "provider": stack.provider,
        "model": "bench",
        "message": "go",
        "params": {"stream": True, "max_tokens": stream.start.chunks},
    }
    with requests.Session() as session:
        session.cookies.update(stack.client.session.cookies)
        started = time.time()
        url = f"{stack.client.url}/api/conversations/{conversation}/runs/"
        response = session.post(url, json=body, headers=stack.client.headers)
    if response.status_code != 201:
        raise RuntimeError(f"HTTP {response.status_code} {response.text[:200]}")
    return started


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


def measure(k: int, args: argparse.Namespace, upstream: Upstream, env: dict[str, str]) -> Row:
    starts = plan(k, args.chunks, args.rate, args.ramp)
    log(f"K={k}: direct…")
    direct = asyncio.run(run_direct(upstream, starts))
    log(f"K={k}: through the stack…")
    with AppServer(env) as server:
        client = Client(server.url)
        stack = Stack(server, client, provider_id(client, PROVIDER), upstream)
        asyncio.run(run_stack(stack, plan(1, 5, args.rate, 0.0, probes=0)))  # warm-up
        through = asyncio.run(run_stack(stack, starts))
    log(f"K={k}: {through.chunks}/{through.expected} chunks; Daphne log {server.log_path}")
    return Row(k, args.rate, direct, through, log_anomalies(server.output()))


@contextmanager
def bench_database(redis: bool, upstream: Upstream) -> Iterator[dict[str, str]]:
    """A fresh database with the Bench provider; DEBUG off, as in production."""
    kind = "postgres" if redis else "sqlite"
    with app_database(kind, redis=redis, DEBUG="0", SECRET_KEY=secrets.token_urlsafe(32)) as env:
        key_env = {**env, "PLAYGROUND_PROVIDER_KEY": "sk-bench-0000"}
        manage(key_env, "addprovider", PROVIDER, "--base-url", upstream.base_url)
        yield env


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


def report(rows: list[Row], args: argparse.Namespace, speed: float) -> str:
    layer = "PostgreSQL + Redis" if args.redis else "SQLite + in-memory layer"
    targets = ", ".join(f"{name} ≤ {limit:g} ms" for name, limit in TARGETS.items())
    lines = [
        f"Relay benchmark: {args.chunks} chunks per stream, the K streams started over "
        f"{args.ramp:g} s, TTFT from {PROBES} probes made while they flow; {layer}; "
        f"{os.cpu_count()} CPUs; machine speed: {speed:.2f} µs to decode one chunk (json.loads, best of 5).",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
        *(table_row(row) for row in rows),
        "",
        f"Added = stack percentile - direct percentile. Targets (K=50, R=50): {targets}.",
        "Other load: CPU of every process but Daphne, the upstream server and this one"
        + (" (PostgreSQL and Redis included)" if args.redis else "")
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
        if row.log_lines:
            flagged = f"{len(row.log_lines)} Daphne log lines flagged"
            lines.append(f"K={row.k}: {flagged}: {row.log_lines[:5]}")
    if not any("wrong" in line or "flagged" in line for line in lines):
        lines.append("Every chunk arrived exactly once and in order; the Daphne logs are clean.")
    return lines


# ---------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--streams", default="1,10,50,100", help="values of K, comma-separated")
    parser.add_argument("--rate", type=float, default=50.0, help="chunks per second per stream")
    parser.add_argument("--chunks", type=int, default=200, help="chunks per stream")
    parser.add_argument("--ramp", type=float, default=1.0, help="seconds to start the K streams")
    parser.add_argument("--repeat", type=int, default=1, help="runs per K, each its own row (spread)")
    parser.add_argument("--redis", action="store_true", help="PostgreSQL + Redis instead")
    parser.add_argument("--serve-upstream", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.streams = [int(k) for k in args.streams.split(",") for _ in range(args.repeat)]
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
    with Upstream(args.rate) as upstream, bench_database(args.redis, upstream) as env:
        rows = [measure(k, args, upstream, env) for k in args.streams]
    print(report(rows, args, speed))


if __name__ == "__main__":
    main()
