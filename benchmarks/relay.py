"""Relay overhead: K concurrent streams through the whole stack vs. the same server read directly.

    .venv/bin/python benchmarks/relay.py [--streams 1,10,50,100] [--rate 50] [--chunks 200]
                                         [--ramp 1.0] [--redis]

Method
------
An upstream SSE server runs in its own process (this file with `--serve-upstream`, stdlib
asyncio), so its CPU is not charged to anyone measured. Every POST .../chat/completions gets
`max_tokens` chunks in the seed-relay shape, chunked transfer encoding: the first at once,
then one every 1/R s (each stream with a random phase, so K streams do not tick in lockstep),
then a finish chunk, a usage chunk and `data: [DONE]`. Each chunk's content is a marker
`⟦i@t⟧`: its index and the time.time() just before it was written (same machine, one clock).

For each K, one after the other, against the same server:
1. direct: K asyncio readers POST to the server and parse the SSE themselves (a floor);
2. stack: a fresh Daphne process (tests.servers.AppServer; DEBUG off; SQLite + in-memory
   layer, or PostgreSQL + Redis with --redis) whose "Bench" provider points at the server,
   one warm-up run, then K conversations, K websocket clients (session cookie and Origin, as
   a browser sends them) and K runs submitted through POST /api/conversations/<id>/runs/.
Both phases start their K streams evenly spread over --ramp seconds (0: one burst).

Per-chunk latency = receive time - embedded send time, for every marker, including markers
the relay coalesced into one `run.delta`. Added latency = stack percentile - direct
percentile (a difference of percentiles, not a percentile of differences).
TTFT = first marker received - request start (direct: its POST; stack: the submit POST).
CPU per chunk = Daphne's user+sys CPU (/proc/<pid>/stat) from the first submit to the last
`run.done`, over chunks relayed; "direct" is this process's CPU over the direct phase.
RSS per stream = (peak Daphne RSS while streaming - RSS before the websockets opened) / K.
Correctness: every stream must deliver markers 0..N-1 exactly once and in order, and end
with a `run.done` whose status is "completed" and whose text holds all N markers.
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
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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
TICKS = os.sysconf("SC_CLK_TCK")
TARGET_K, TARGET_RATE = 50, 50.0
TARGETS = {"added p50": 2.0, "added p99": 25.0, "TTFT overhead p50": 30.0}  # ms
NOISY_CORES = 0.25  # other processes' load above which the figures are suspect


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


async def answer_requests(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rate: float
) -> None:
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
    """The upstream server in its own process."""

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


# ---------------------------------------------------------------------------- measurements


@dataclass
class Stream:
    """What one reader saw of one stream. Times are time.time() seconds."""

    started: float = 0.0
    first_marker: float | None = None
    latencies: list[float] = field(default_factory=list)  # ms, one per marker received
    indices: list[int] = field(default_factory=list)
    status: str = "unfinished"
    final_markers: int | None = None  # markers in run.done's text (stack only)

    def record(self, text: str, received: float) -> None:
        for index, sent in MARKER.findall(text):
            self.indices.append(int(index))
            self.latencies.append((received - float(sent)) * 1000)
            if self.first_marker is None:
                self.first_marker = received

    @property
    def ttft(self) -> float | None:
        return None if self.first_marker is None else (self.first_marker - self.started) * 1000

    def problems(self, count: int) -> list[str]:
        seen = set(self.indices)
        found = []
        if len(seen) < count:
            found.append(f"lost {count - len(seen)}")
        if len(self.indices) > len(seen):
            found.append(f"repeated {len(self.indices) - len(seen)}")
        if self.indices != sorted(self.indices):
            found.append("out of order")
        if self.status != "completed":
            found.append(f"status {self.status}")
        if self.final_markers not in (None, count):
            found.append(f"final text holds {self.final_markers}/{count} markers")
        return found


@dataclass
class Phase:
    streams: list[Stream]
    cpu_seconds: float  # of the process measured (Daphne, or this one for direct)
    other_cores: float  # average CPU of every other process on the machine
    rss_growth: int = 0  # bytes

    @property
    def chunks(self) -> int:
        return sum(len(set(s.indices)) for s in self.streams)

    @property
    def latencies(self) -> list[float]:
        return [value for s in self.streams for value in s.latencies]

    @property
    def ttfts(self) -> list[float]:
        return [s.ttft for s in self.streams if s.ttft is not None]

    def cpu_per_chunk(self) -> float:
        return self.cpu_seconds / self.chunks * 1e6 if self.chunks else math.nan

    def problems(self, count: int) -> list[str]:
        found = ((i, s.problems(count)) for i, s in enumerate(self.streams))
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


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all cores), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / TICKS


class CpuWindow:
    """CPU used from creation to stop(): by each of `pids`, by this process, by all else."""

    def __init__(self, *pids: int) -> None:
        self.pids = pids
        self.start = self.sample()

    def sample(self) -> list[float]:
        own = [time.monotonic(), machine_busy_seconds(), time.process_time()]
        return own + [cpu_seconds(pid) for pid in self.pids]

    def stop(self) -> CpuWindow:
        end = self.sample()
        deltas = (b - a for a, b in zip(self.start, end, strict=True))
        wall, machine, self.own, *self.by_pid = deltas
        self.other_cores = (machine - self.own - sum(self.by_pid)) / wall
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


async def run_direct(upstream: Upstream, k: int, count: int, ramp: float) -> Phase:
    streams = [Stream() for _ in range(k)]
    cpu = CpuWindow(upstream.proc.pid)
    readers = (read_direct(upstream, count, s, i * ramp / k) for i, s in enumerate(streams))
    await asyncio.wait_for(asyncio.gather(*readers), count / upstream.rate + ramp + 60)
    cpu.stop()
    return Phase(streams, cpu.own, cpu.other_cores)


async def read_direct(upstream: Upstream, count: int, stream: Stream, delay: float) -> None:
    await asyncio.sleep(delay)
    stream.started = time.time()
    reader, writer = await asyncio.open_connection("127.0.0.1", upstream.port)
    body = json.dumps({"model": "bench", "stream": True, "max_tokens": count}).encode()
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await reader.readuntil(b"\r\n\r\n")  # our own server: 200, chunked
    try:
        stream.status = await read_events(reader, stream)
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
    upstream_pid: int

    @property
    def pid(self) -> int:
        return self.server.proc.pid


def provider_id(client: Client, name: str) -> int:
    page = client.get("/").text
    found = re.search(r'id="playground-config" type="application/json">(.*?)</script>', page)
    providers = json.loads(found.group(1))["providers"]
    return next(p["id"] for p in providers if p["name"] == name)


async def run_stack(stack: Stack, k: int, count: int, ramp: float, rate: float) -> Phase:
    conversations = [await asyncio.to_thread(stack.client.new_conversation) for _ in range(k)]
    rss_before = rss_bytes(stack.pid)
    sockets = await asyncio.gather(*(open_socket(stack, c) for c in conversations))
    streams = [Stream() for _ in range(k)]
    watchers = [asyncio.create_task(watch(ws, s)) for ws, s in zip(sockets, streams, strict=True)]
    peak = PeakRss(stack.pid, rss_before)
    tracker = asyncio.create_task(peak.track())
    cpu = CpuWindow(stack.pid, stack.upstream_pid)
    try:
        await submit_all(stack, conversations, streams, count, ramp)
        await asyncio.wait_for(asyncio.gather(*watchers), count / rate + ramp + 60)
    finally:
        cpu.stop()
        tracker.cancel()
        await asyncio.gather(*(ws.close() for ws in sockets))
    return Phase(streams, cpu.by_pid[0], cpu.other_cores, peak.value - rss_before)


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


async def submit_all(
    stack: Stack, conversations: list[int], streams: list[Stream], count: int, ramp: float
) -> None:
    body = {
        "provider": stack.provider,
        "model": "bench",
        "message": "go",
        "params": {"stream": True, "max_tokens": count},
    }
    loop = asyncio.get_running_loop()
    k = len(conversations)
    with ThreadPoolExecutor(k) as pool:
        starts = await asyncio.gather(
            *(
                loop.run_in_executor(pool, submit, stack.client, c, body, i * ramp / k)
                for i, c in enumerate(conversations)
            )
        )
    for stream, started in zip(streams, starts, strict=True):
        stream.started = started


def submit(client: Client, conversation: int, body: dict, delay: float) -> float:
    """POST one run as a browser tab would (own connection); returns when it started."""
    time.sleep(delay)
    with requests.Session() as session:
        session.cookies.update(client.session.cookies)
        started = time.time()
        url = f"{client.url}/api/conversations/{conversation}/runs/"
        response = session.post(url, json=body, headers=client.headers)
    if response.status_code != 201:
        raise RuntimeError(f"submit failed: HTTP {response.status_code} {response.text[:300]}")
    return started


def log_anomalies(output: str) -> list[str]:
    """Lines of the Daphne log that say something went wrong."""
    flags = ("Traceback", "ERROR", "WARNING", "CRITICAL", "Exception")
    return [line for line in output.splitlines() if any(flag in line for flag in flags)]


# ---------------------------------------------------------------------------- one K


@dataclass
class Row:
    k: int
    rate: float
    count: int
    direct: Phase
    stack: Phase
    log_lines: list[str]

    def added(self, q: float) -> float:
        return percentile(self.stack.latencies, q) - percentile(self.direct.latencies, q)

    def ttft_overhead(self) -> float:
        return percentile(self.stack.ttfts, 50) - percentile(self.direct.ttfts, 50)

    def misses(self) -> list[str]:
        """Targets missed (empty: all met)."""
        figures = {
            "added p50": self.added(50),
            "added p99": self.added(99),
            "TTFT overhead p50": self.ttft_overhead(),
        }
        return [
            f"{name} {figures[name]:.1f} ms > {limit:g} ms"
            for name, limit in TARGETS.items()
            if not figures[name] <= limit
        ]


def measure(k: int, args: argparse.Namespace, upstream: Upstream, env: dict[str, str]) -> Row:
    log(f"K={k}: direct…")
    direct = asyncio.run(run_direct(upstream, k, args.chunks, args.ramp))
    log(f"K={k}: through the stack…")
    with AppServer(env) as server:
        client = Client(server.url)
        stack = Stack(server, client, provider_id(client, PROVIDER), upstream.proc.pid)
        asyncio.run(run_stack(stack, 1, 5, 0.0, args.rate))  # warm-up: imports, pools, loop
        through = asyncio.run(run_stack(stack, k, args.chunks, args.ramp, args.rate))
    output = server.output()
    row = Row(k, args.rate, args.chunks, direct, through, log_anomalies(output))
    log(f"K={k}: {through.chunks}/{k * args.chunks} chunks; Daphne log {server.log_path}")
    return row


@contextmanager
def bench_database(redis: bool, upstream: Upstream) -> Iterator[dict[str, str]]:
    """A fresh database with the Bench provider; DEBUG off, as in production."""
    kind = "postgres" if redis else "sqlite"
    with app_database(kind, redis=redis, DEBUG="0", SECRET_KEY=secrets.token_urlsafe(32)) as env:
        key_env = {**env, "PLAYGROUND_PROVIDER_KEY": "sk-bench-0000"}
        manage(key_env, "addprovider", PROVIDER, "--base-url", upstream.base_url)
        yield env


# ---------------------------------------------------------------------------- report


def ms(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.1f}"


def table_row(row: Row) -> str:
    d, s = row.direct, row.stack
    lost = row.k * row.count - s.chunks
    verdict = "—"
    if row.k == TARGET_K and row.rate == TARGET_RATE:
        verdict = "met" if not row.misses() else "MISSED"
    cells = [
        str(row.k),
        f"{row.rate:g}",
        f"{s.chunks}/{row.k * row.count}" + (f" ({lost} lost)" if lost else ""),
        f"{ms(percentile(d.latencies, 50))} / {ms(percentile(d.latencies, 99))}",
        f"{ms(percentile(s.latencies, 50))} / {ms(percentile(s.latencies, 99))}",
        f"{ms(row.added(50))} / {ms(row.added(99))}",
        ms(percentile(d.ttfts, 50)),
        ms(percentile(s.ttfts, 50)),
        ms(row.ttft_overhead()),
        f"{s.cpu_per_chunk():.0f} ({d.cpu_per_chunk():.0f})",
        f"{s.rss_growth / row.k / 2**20:.2f}",
        f"{s.other_cores:.2f} ({d.other_cores:.2f})",
        verdict,
    ]
    return "| " + " | ".join(cells) + " |"


HEADER = [
    "K",
    "R (chunks/s)",
    "chunks relayed",
    "direct p50 / p99 ms",
    "stack p50 / p99 ms",
    "added p50 / p99 ms",
    "TTFT direct p50 ms",
    "TTFT stack p50 ms",
    "TTFT overhead p50 ms",
    "CPU µs/chunk Daphne (direct)",
    "RSS MB/stream",
    "other load, cores",
    "targets at K=50",
]


def report(rows: list[Row], args: argparse.Namespace) -> str:
    layer = "PostgreSQL + Redis" if args.redis else "SQLite + in-memory layer"
    lines = [
        f"Relay benchmark: {args.chunks} chunks per stream, streams started over {args.ramp:g} s, "
        f"{layer}, {os.cpu_count()} CPUs.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
        *(table_row(row) for row in rows),
        "",
        "Added = stack percentile - direct percentile. Targets (K=50, R=50): "
        + ", ".join(f"{name} ≤ {limit:g} ms" for name, limit in TARGETS.items())
        + ". Other load: CPU of every process but Daphne, the upstream server and this one"
        + (" (PostgreSQL and Redis included)" if args.redis else "")
        + ", stack phase (direct phase).",
        "",
    ]
    return "\n".join(lines + findings(rows))


def findings(rows: list[Row]) -> list[str]:
    lines = []
    for row in rows:
        if row.k == TARGET_K and row.rate == TARGET_RATE and row.misses():
            lines.append(f"K={row.k}: missed {'; '.join(row.misses())}.")
        busy = max(row.stack.other_cores, row.direct.other_cores)
        if busy > NOISY_CORES:
            lines.append(f"K={row.k}: other processes used up to {busy:.2f} cores meanwhile.")
        for phase, name in ((row.direct, "direct"), (row.stack, "stack")):
            problems = phase.problems(row.count)
            if problems:
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
    parser.add_argument("--redis", action="store_true", help="PostgreSQL + Redis instead")
    parser.add_argument("--serve-upstream", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.streams = [int(k) for k in args.streams.split(",")]
    return args


def main() -> None:
    args = parse_args()
    if args.serve_upstream:
        asyncio.run(serve_upstream(args.rate))
        return
    with Upstream(args.rate) as upstream, bench_database(args.redis, upstream) as env:
        rows = [measure(k, args, upstream, env) for k in args.streams]
    print(report(rows, args))


if __name__ == "__main__":
    main()
