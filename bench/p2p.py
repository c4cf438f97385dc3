"""P2P benchmark: `python -m bench.p2p [--json PATH] [--sizes 8,24,48] [--single 10]`.

Real py-libp2p transports (`p2p.libp2p_transport`, TCP + Noise + Yamux + GossipSub 1.1) on
127.0.0.1, one node per OS process (and, with --single, N nodes in one process). Each node has
its own ed25519 identity; node i dials up to 3 random earlier nodes (a sparse graph, as a mesh
grown from bootstrap addresses). Measured per N:
- start (all processes imported libp2p and listen), connect, mesh ready (every node has a mesh
  peer on both topics);
- idle RSS per process;
- 1 KiB signed capacity adverts (real envelopes, real node.gossip validators) at 2 msg/s from
  random nodes: delivery ratio, all-nodes latency p50/p95 (publish -> last receiver);
- 64 KiB raw messages at 1 msg/s: the same;
- the highest rate (1 KiB adverts) still delivered 100 % (steps 2, 4, 8, 16 msg/s, 5 s each);
- request/response between two processes: round trip of a 1-byte request, throughput of 1 MiB
  responses.
Publishing is open-loop (paced by the parent); a message not seen by every node within
`--drain-s` after the last publish counts as undelivered. JSON keys include announce_p95_ms_24,
delivery_ratio_24 and idle_rss_mb.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import queue
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

BENCH_TOPIC = "/dsperse/bench/1"
RR_PROTOCOL = "/dsperse/bench-rr/1.0.0"
Msg = dict[str, Any]


# ---------------------------------------------------------------------------------------------
# Worker side: K nodes in one trio loop, driven by JSON lines on stdin, reporting on stdout.
# ---------------------------------------------------------------------------------------------


def _seed(i: int) -> bytes:
    return hashlib.sha256(b"bench-p2p-%d" % i).digest()


def _emit(doc: Msg) -> None:
    sys.stdout.write(json.dumps(doc, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def run_worker(base: int, count: int) -> None:
    t0 = time.perf_counter()
    import trio

    from node.gossip import TopicValidator
    from node.identity import NodeIdentity
    from node.topics import GOSSIP_TOPICS, TOPIC_CAPACITY
    from node.wire import ENVELOPE_BYTES_MAX, encode_envelope
    from node.wire.messages import CapacityAdvert
    from p2p.abc import GossipMessage, PeerId, TransportSettings, Verdict
    from p2p.errors import P2PError
    from p2p.libp2p_transport import Libp2pTransport

    import_s = time.perf_counter() - t0
    settings = TransportSettings(
        topics=(*GOSSIP_TOPICS, BENCH_TOPIC),
        gossip_bytes_max=ENVELOPE_BYTES_MAX,
        response_bytes_max=4 << 20,
        request_timeout_s=30,
    )
    ids = [NodeIdentity.from_seed(_seed(base + k)) for k in range(count)]
    nodes = [Libp2pTransport(_seed(base + k), settings=settings) for k in range(count)]
    last_ts = [0] * count

    def advert(k: int, size: int) -> bytes:
        addr = f"/ip4/127.0.0.1/tcp/4001/p2p/{ids[k].peer_id}/"
        pad = max(0, (size - 400) // 8 - len(addr))
        addrs = tuple((addr + chr(97 + j) * pad)[:256] for j in range(8))
        body = CapacityAdvert(1, 1, 10, 17, 4096, "bench", "23.0.5", addrs)
        ts = max(time.time_ns() // 1_000_000, last_ts[k] + 1)
        last_ts[k] = ts
        return encode_envelope(body, ids[k], ts)

    def accept(message: GossipMessage) -> Verdict:
        return Verdict.ACCEPT

    async def serve_rr(peer: PeerId, body: bytes) -> bytes:
        await trio.lowlevel.checkpoint()
        return b"r" * int(body)

    async def consume(k: int, channel: Any) -> None:
        async for message in channel:
            _emit(
                {
                    "r": hashlib.sha256(message.data).hexdigest()[:16],
                    "n": base + k,
                    "t": time.time_ns(),
                }
            )

    async def handle(cmd: Msg, nursery: trio.Nursery) -> None:
        k = cmd.get("k", 0) - base
        if cmd["cmd"] == "connect":
            errors = []
            for addr in cmd["addrs"]:
                try:
                    await nodes[k].connect(addr)
                except P2PError as exc:
                    errors.append(str(exc))
            _emit({"ok": "connect", "n": base + k, "errors": errors})
        elif cmd["cmd"] == "wait_mesh":
            try:
                for topic in (TOPIC_CAPACITY, BENCH_TOPIC):
                    await nodes[k].wait_topic_peers(topic, 1, cmd["timeout_s"])
                _emit({"ok": "wait_mesh", "n": base + k})
            except P2PError as exc:
                _emit({"ok": "wait_mesh", "n": base + k, "errors": [str(exc)]})
        elif cmd["cmd"] == "publish":
            size, kind = cmd["size"], cmd["kind"]
            data = advert(k, size) if kind == "advert" else os.urandom(size)
            topic = TOPIC_CAPACITY if kind == "advert" else BENCH_TOPIC
            t = time.time_ns()
            await nodes[k].publish(topic, data)
            _emit({"p": hashlib.sha256(data).hexdigest()[:16], "t": t, "n": base + k})
        elif cmd["cmd"] == "rr":
            nursery.start_soon(rr_bench, k, cmd)
        elif cmd["cmd"] == "stats":
            _emit({"ok": "stats", "stats": [n.statistics().to_dict() for n in nodes]})

    async def rr_bench(k: int, cmd: Msg) -> None:
        peer = PeerId(cmd["peer"])
        rtts: list[float] = []
        t_big: list[float] = []
        try:
            for _ in range(cmd["small"]):
                t = time.perf_counter()
                await nodes[k].request(peer, RR_PROTOCOL, b"1")
                rtts.append(time.perf_counter() - t)
            for _ in range(cmd["big"]):
                t = time.perf_counter()
                body = await nodes[k].request(peer, RR_PROTOCOL, b"%d" % (1 << 20))
                if len(body) != 1 << 20:
                    raise P2PError(f"short body {len(body)}")
                t_big.append(time.perf_counter() - t)
        except P2PError as exc:
            _emit({"ok": "rr", "rtt_s": rtts, "big_s": t_big, "errors": [str(exc)]})
            return
        _emit({"ok": "rr", "rtt_s": rtts, "big_s": t_big})

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for k, node in enumerate(nodes):
                await nursery.start(node.run)
                node.set_request_handler(RR_PROTOCOL, serve_rr)
                validator = TopicValidator(TOPIC_CAPACITY, lambda: time.time_ns() // 1_000_000)
                nursery.start_soon(consume, k, await node.subscribe(TOPIC_CAPACITY, validator))
                nursery.start_soon(consume, k, await node.subscribe(BENCH_TOPIC, accept))
            _emit(
                {
                    "ready": [
                        {"n": base + k, "peer_id": n.peer_id, "addr": n.listen_addrs()[0]}
                        for k, n in enumerate(nodes)
                    ],
                    "import_s": import_s,
                    "pid": os.getpid(),
                }
            )
            stdin = trio.lowlevel.FdStream(os.dup(0))
            buf = b""
            while True:
                chunk = await stdin.receive_some(65536)
                if not chunk:
                    break
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    await handle(json.loads(line), nursery)
            nursery.cancel_scope.cancel()

    trio.run(main)


# ---------------------------------------------------------------------------------------------
# Parent side: start workers, drive phases, collect receipts, print the table.
# ---------------------------------------------------------------------------------------------


class Worker:
    def __init__(self, base: int, count: int, inbox: queue.Queue[Msg]) -> None:
        cmd = [sys.executable, "-m", "bench.p2p", "--worker", str(count), "--base", str(base)]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=Path(__file__).resolve().parents[1],
        )
        self.base, self.count = base, count
        threading.Thread(target=self._pump, args=(inbox,), daemon=True).start()

    def _pump(self, inbox: queue.Queue[Msg]) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            inbox.put(json.loads(line))
        self.proc.stdout.close()

    def send(self, doc: Msg) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(doc) + "\n").encode())
        self.proc.stdin.flush()

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Cluster:
    """N nodes over `procs` worker processes; every worker line lands in one queue."""

    def __init__(self, n: int, per_process: int) -> None:
        self.n = n
        self.inbox: queue.Queue[Msg] = queue.Queue()
        self.workers = [
            Worker(b, min(per_process, n - b), self.inbox) for b in range(0, n, per_process)
        ]
        self.owner = {i: w for w in self.workers for i in range(w.base, w.base + w.count)}
        self.nodes: dict[int, Msg] = {}
        self.receipts: dict[str, dict[int, int]] = {}
        self.sent: dict[str, tuple[int, int]] = {}

    def wait(self, pred: Any, timeout_s: float) -> Msg:
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("benchmark wait timed out")
            try:
                doc = self.inbox.get(timeout=remaining)
            except queue.Empty:
                continue
            if "r" in doc:
                self.receipts.setdefault(doc["r"], {})[doc["n"]] = doc["t"]
            elif "p" in doc:
                self.sent[doc["p"]] = (doc["n"], doc["t"])
            if pred(doc):
                return doc

    def start(self, timeout_s: float) -> dict[str, float]:
        t0 = time.monotonic()
        imports: list[float] = []
        while len(self.nodes) < self.n:
            doc = self.wait(lambda d: "ready" in d, timeout_s)
            imports.append(doc["import_s"])
            self.nodes.update({r["n"]: r for r in doc["ready"]})
        return {"start_s": time.monotonic() - t0, "import_s": statistics.mean(imports)}

    def ask_all(self, cmds: list[Msg], ok: str, timeout_s: float) -> int:
        """Send every command, wait for every answer; the number of errors reported."""
        for cmd in cmds:
            self.owner[cmd["k"]].send(cmd)
        errors = 0
        for _ in cmds:
            doc = self.wait(lambda d: d.get("ok") == ok, timeout_s)
            errors += len(doc.get("errors", ()))
        return errors

    def connect(self, rng: random.Random, timeout_s: float) -> dict[str, float]:
        t0 = time.monotonic()
        cmds = [
            {
                "cmd": "connect",
                "k": i,
                "addrs": [self.nodes[j]["addr"] for j in rng.sample(range(i), min(3, i))],
            }
            for i in range(1, self.n)
        ]
        dial_errors = self.ask_all(cmds, "connect", timeout_s)
        t1 = time.monotonic()
        mesh_errors = self.ask_all(
            [{"cmd": "wait_mesh", "k": i, "timeout_s": timeout_s / 2} for i in range(self.n)],
            "wait_mesh",
            timeout_s,
        )
        return {
            "connect_s": t1 - t0,
            "mesh_ready_s": time.monotonic() - t0,
            "dial_errors": dial_errors,
            "mesh_errors": mesh_errors,
        }

    def traffic(
        self, rng: random.Random, kind: str, size: int, rate: float, count: int, drain_s: float
    ) -> dict[str, float]:
        self.receipts.clear()
        self.sent.clear()
        t_next = time.monotonic()
        for _ in range(count):
            k = rng.randrange(self.n)
            self.owner[k].send({"cmd": "publish", "k": k, "kind": kind, "size": size})
            t_next += 1 / rate
            while (delay := t_next - time.monotonic()) > 0:
                try:
                    self.wait(lambda d: False, delay)
                except TimeoutError:
                    break
        deadline = time.monotonic() + drain_s
        while not self._all_delivered(count) and time.monotonic() < deadline:
            try:
                self.wait(lambda d: "r" in d, deadline - time.monotonic())
            except TimeoutError:
                break
        return self._score(count)

    def _all_delivered(self, count: int) -> bool:
        return len(self.sent) == count and all(
            len(self.receipts.get(h, {})) >= self.n - 1 for h in self.sent
        )

    def _score(self, count: int) -> dict[str, float]:
        got = sum(len(self.receipts.get(h, {})) for h in self.sent)
        all_nodes = [
            (max(self.receipts[h].values()) - t) / 1e6
            for h, (_, t) in self.sent.items()
            if len(self.receipts.get(h, {})) >= self.n - 1
        ]
        return {
            "delivery": got / max(1, count * (self.n - 1)),
            "p50_ms": _pct(all_nodes, 50),
            "p95_ms": _pct(all_nodes, 95),
        }

    def wait_quiet(self, quiet_s: float, timeout_s: float) -> float:
        """After an overload step: wait until no receipt arrives for `quiet_s` (backlog gone)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            try:
                self.wait(lambda d: "r" in d, quiet_s)
            except TimeoutError:
                return time.monotonic() - t0 - quiet_s
        return float("nan")

    def rss(self) -> list[float]:
        return [w.rss_mb() for w in self.workers]

    def rr(self, small: int, big: int, timeout_s: float) -> dict[str, float]:
        self.owner[0].send(
            {"cmd": "rr", "k": 0, "peer": self.nodes[1]["peer_id"], "small": small, "big": big}
        )
        doc = self.wait(lambda d: d.get("ok") == "rr", timeout_s)
        return {
            "rr_errors": len(doc.get("errors", ())),
            "rr_rtt_ms_p50": _pct([x * 1000 for x in doc["rtt_s"]], 50),
            "rr_1mib_ms_p50": _pct([x * 1000 for x in doc["big_s"]], 50),
            "rr_1mib_mib_per_s": len(doc["big_s"]) / sum(doc["big_s"] or [float("nan")]),
        }

    def stop(self) -> None:
        for w in self.workers:
            w.stop()


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def bench_size(n: int, per_process: int, args: argparse.Namespace) -> dict[str, float]:
    rng = random.Random(args.seed)
    cluster = Cluster(n, per_process)
    out: dict[str, float] = {"n": n, "processes": len(cluster.workers)}
    try:
        _measure(cluster, n, args, rng, out)
    except TimeoutError as exc:  # report what was measured before the stall
        print(f"N={n}: {exc} (figures after this point are missing)", file=sys.stderr)
        out["timed_out"] = 1
    finally:
        cluster.stop()
    return out


def _measure(
    cluster: Cluster, n: int, args: argparse.Namespace, rng: random.Random, out: dict[str, float]
) -> None:
    out |= cluster.start(args.timeout_s)
    _progress(n, "started", out)
    out |= cluster.connect(rng, args.timeout_s)
    _progress(n, "connected", out)
    rss = cluster.rss()
    out["idle_rss_mb_max"], out["idle_rss_mb_avg"] = max(rss), statistics.mean(rss)
    count = max(4, round(args.duration_s * 2))
    adv = cluster.traffic(rng, "advert", 1024, 2.0, count, args.drain_s)
    out |= {f"advert_1k_{k}": v for k, v in adv.items()}
    raw = cluster.traffic(rng, "raw", 64 * 1024, 1.0, max(4, round(args.duration_s)), args.drain_s)
    out |= {f"raw_64k_{k}": v for k, v in raw.items()}
    best = 0.0
    for rate in args.rates:
        step = cluster.traffic(rng, "advert", 1024, rate, round(rate * 5), args.drain_s)
        out[f"rate_{rate:g}_delivery"] = step["delivery"]
        out[f"rate_{rate:g}_p95_ms"] = step["p95_ms"]
        if step["delivery"] < 1.0:
            break
        best = rate
    out["max_rate_full_delivery"] = best
    out["backlog_drain_s"] = cluster.wait_quiet(args.quiet_s, args.timeout_s)
    _progress(n, "traffic done", out)
    if n >= 2:
        out |= cluster.rr(20, args.rr_big, args.timeout_s)
    rss = cluster.rss()
    out["after_rss_mb_max"] = max(rss)


def _progress(n: int, phase: str, out: dict[str, float]) -> None:
    print(f"[bench.p2p] N={n} {phase}: {json.dumps(out)}", file=sys.stderr, flush=True)


COLUMNS = [
    ("n", "N", "{:.0f}"),
    ("processes", "procs", "{:.0f}"),
    ("start_s", "start s", "{:.1f}"),
    ("connect_s", "connect s", "{:.2f}"),
    ("mesh_ready_s", "mesh s", "{:.2f}"),
    ("idle_rss_mb_max", "idle RSS MB", "{:.0f}"),
    ("advert_1k_delivery", "1K@2/s deliv", "{:.3f}"),
    ("advert_1k_p50_ms", "1K p50 ms", "{:.0f}"),
    ("advert_1k_p95_ms", "1K p95 ms", "{:.0f}"),
    ("raw_64k_delivery", "64K@1/s deliv", "{:.3f}"),
    ("raw_64k_p50_ms", "64K p50 ms", "{:.0f}"),
    ("raw_64k_p95_ms", "64K p95 ms", "{:.0f}"),
    ("max_rate_full_delivery", "max rate 100%", "{:.0f}"),
    ("rr_rtt_ms_p50", "RR rtt ms", "{:.1f}"),
    ("rr_1mib_mib_per_s", "RR 1MiB MiB/s", "{:.1f}"),
    ("after_rss_mb_max", "RSS after MB", "{:.0f}"),
]


def print_table(rows: list[dict[str, float]]) -> None:
    print("| mode | " + " | ".join(h for _, h, _ in COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for row in rows:
        mode = "1 process" if row["processes"] == 1 and row["n"] > 1 else "1 node/process"
        cells = [fmt.format(row[k]) if k in row else "-" for k, _, fmt in COLUMNS]
        print(f"| {mode} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.p2p",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--json", type=Path, help="write the figures as JSON")
    parser.add_argument("--sizes", default="8,24,48", help="node counts, one process each")
    parser.add_argument("--single", default="10", help="node counts in one process ('' = none)")
    parser.add_argument("--rates", default="2,4,8,16", help="msg/s steps for the max-rate search")
    parser.add_argument("--duration-s", type=float, default=15.0)
    parser.add_argument("--drain-s", type=float, default=10.0)
    parser.add_argument("--rr-big", type=int, default=10, help="1 MiB responses to time")
    parser.add_argument("--timeout-s", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quiet-s", type=float, default=3.0, help="idle gap ending a backlog")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--base", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args.base, args.worker)
        return
    args.rates = [float(r) for r in args.rates.split(",") if r]
    rows = []
    for n in [int(s) for s in args.single.split(",") if s]:
        rows.append(bench_size(n, n, args))
        print_table(rows[-1:])
    for n in [int(s) for s in args.sizes.split(",") if s]:
        rows.append(bench_size(n, 1, args))
        print_table(rows[-1:])
    print()
    print_table(rows)
    figures: dict[str, Any] = {"rows": rows}
    for row in rows:
        if row["processes"] > 1:
            n = int(row["n"])
            figures[f"announce_p95_ms_{n}"] = row.get("advert_1k_p95_ms")
            figures[f"announce_p50_ms_{n}"] = row.get("advert_1k_p50_ms")
            figures[f"delivery_ratio_{n}"] = row.get("advert_1k_delivery")
            figures[f"idle_rss_mb_{n}"] = row.get("idle_rss_mb_max")
    multi = [r for r in rows if r["processes"] > 1]
    ref = next((r for r in multi if r["n"] == 24), multi[0] if multi else None)
    if ref is not None:
        figures["idle_rss_mb"] = ref["idle_rss_mb_max"]
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
