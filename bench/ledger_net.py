"""Ledger over the network: `python -m bench.ledger_net [--nodes 24] [--json PATH] [--quick]`.

N real `dsperse-node run` processes (simnet.procs.NodeProcess, one genesis, 127.0.0.1) keep
live ledger replicas: own entries stored (fsync) then gossiped in batches on /dsperse/ledger/1,
anti-entropy over /dsperse/ledger-sync/1.0.0 fills gaps. Phases, in order:
- idle: RSS per node (VmRSS) and CPU per node while nothing is written;
- propagation: one wallet transfer at a time through a writer's control API; from its
  acknowledgement (the POST returned: stored and fsynced there) until every other replica holds
  it. The nodes record no arrival time, so every other node is polled concurrently (one thread
  each, `POST /ledger/wait` = a dict lookup in the node) every `--poll-ms`; a node stops being
  polled once it holds the entry. The headline is the upper bound (the reply that said "held");
  the lower bound (the last "not held" request's send time) is reported beside it;
- sustained: W writer nodes written open-loop at a total rate, stepped up; a step holds if the
  writers achieved >= 90 % of it and every replica held every entry within `--lag-s` after the
  writes stopped (entries counted by `GET /ledger` only after the window: no polling during it);
- catch-up: a node is stopped (SIGTERM) while `--catchup` entries are written as fast as the
  writers go, then restarted with `--fault drop-ledger-gossip`: seconds from its ready line
  (control URL printed) until its replica holds them all (anti-entropy alone);
- heal: there is no transport-level partition switch on loopback (simnet.netns partitions
  network namespaces on 10.213/16, and reaches each control API through a spawned process per
  call: too slow to poll and off 127.0.0.1), so this is a *crash partition*: a group of
  nodes is stopped (SIGTERM) while the others write `--heal` entries, then the whole group
  restarts at once (normal nodes); seconds from the last one's ready line until every replica
  holds every entry with equal state roots.
CPU seconds per phase are the nodes' utime+stime (/proc/PID/stat) summed; the bench process's
own CPU (writers, pollers) is reported apart. Prints a rich table and a JSON object (--json).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from bench.control_http import http as control_http
from node.config import LedgerNodeConfig, NetworkConfig
from node.control import read_control_token
from node.genesis import build_genesis, install_genesis, write_genesis
from node.replica import ReplicaSettings
from node.topics import TOPIC_LEDGER
from node.wire.ledger_messages import GOSSIP_ENTRIES_MAX, SYNC_ENTRIES_MAX
from simnet.procs import NodeProcess, init_data_dir

PER_NODE = 10**12
START_TIMEOUT_S = 180.0
HTTP_TIMEOUT_S = 10.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
Doc = dict[str, Any]


http = partial(control_http, timeout_s=HTTP_TIMEOUT_S)


@dataclass
class Node:
    proc: NodeProcess
    token: str = ""
    addr: str = ""

    @property
    def name(self) -> str:
        return self.proc.name

    def refresh(self) -> None:
        """After (re)start: the control address and its fresh token."""
        self.addr = self.proc.control_addr
        self.token = read_control_token(self.proc.data_dir) or ""

    def post(self, path: str, body: Doc) -> tuple[int, Any]:
        return http(self.addr, "POST", path, body, self.token)

    def get(self, path: str) -> Doc | None:
        try:
            status, doc = http(self.addr, "GET", path)
        except OSError:
            return None
        return doc if status == 200 and isinstance(doc, dict) else None

    def holds(self, h: str) -> bool:
        try:
            status, _ = self.post("/ledger/wait", {"hash": h, "peers": 0, "timeout_s": 1})
        except OSError:
            return False
        return status == 200

    def transfer(self, to: str, amount: int = 1) -> str | None:
        """The new entry's hash, or None if the write failed."""
        try:
            status, doc = self.post("/wallet/transfer", {"to": to, "amount": amount})
        except OSError:
            return None
        return doc["hash"] if status == 200 and isinstance(doc, dict) else None

    def pid(self) -> int | None:
        p = self.proc.popen
        return p.pid if p is not None and self.proc.is_running() else None


def cpu_ticks(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = text.rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def own_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# ---------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------


@dataclass
class Net:
    root: Path
    nodes: list[Node]
    writers: list[Node]
    rng: random.Random
    pool: ThreadPoolExecutor
    expected: int = 0  # entries every replica must hold
    heads: dict[str, str] = field(default_factory=dict)  # writer -> its last acknowledged entry
    log: Callable[[str], None] = print
    phase_cpu: dict[str, float] = field(default_factory=dict)

    def running(self) -> list[Node]:
        return [n for n in self.nodes if n.proc.is_running()]

    def start(self, node: Node, extra: list[str] | None = None) -> None:
        # Only nodes that announced their addresses (not one of a group being started).
        others = [n for n in self.running() if n is not node and n.proc.listen_addrs]
        node.proc.extra_args = extra or []
        node.proc.start(
            [n.proc.bootstrap_addr() for n in self.rng.sample(others, min(2, len(others)))]
        )

    def wait_ready(self, node: Node) -> None:
        if not node.proc.wait_ready(START_TIMEOUT_S):
            tail = (node.proc.data_dir / "node.log").read_text()[-2000:]
            raise RuntimeError(f"{node.name} did not start:\n{tail}")
        node.refresh()

    def each(self, fn: Callable[[Node], Any], nodes: list[Node] | None = None) -> list[Any]:
        return list(self.pool.map(fn, nodes if nodes is not None else self.running()))

    def counts(self, nodes: list[Node] | None = None) -> list[int]:
        docs = self.each(lambda n: n.get("/ledger"), nodes)
        return [d["entries"] if d else -1 for d in docs]

    def wait_all(
        self,
        target: int,
        timeout_s: float,
        nodes: list[Node] | None = None,
        interval_s: float = 0.25,
    ) -> float | None:
        """Seconds until every node holds every writer's last entry and `target` entries (None
        on timeout). Head lookups are dict lookups in the node; `GET /ledger` (which computes
        the state root, ~100 ms of a loaded node) is asked only once the heads are there."""
        heads = list(self.heads.values())
        times = self.each(lambda n: self.wait_held(n, heads, target, timeout_s, interval_s), nodes)
        return None if None in times else max(times, default=0.0)

    def converged(self) -> bool:
        docs = self.each(lambda n: n.get("/ledger"))
        roots = {d["state_root"] if d else None for d in docs}
        return (
            None not in roots
            and len(roots) == 1
            and all(d["entries"] == self.expected for d in docs)
        )

    def cpu_snapshot(self) -> dict[int, int]:
        return {pid: cpu_ticks(pid) for n in self.nodes if (pid := n.pid()) is not None}

    def cpu_since(self, snap: dict[int, int]) -> float:
        now = self.cpu_snapshot()
        return sum(t - snap.get(pid, 0) for pid, t in now.items()) / CLK_TCK

    def rss(self) -> list[float]:
        return [n.proc.rss_mb() for n in self.running()]

    def counters(self) -> Counter[str]:
        """Summed replica, sync and transport counters of the running nodes."""
        total: Counter[str] = Counter()
        for doc in self.each(lambda n: n.get("/status")):
            if not doc:
                continue
            ledger = doc.get("ledger") or {}
            for k in (
                "added_gossip",
                "added_sync",
                "published_batches",
                "published_entries",
                "duplicate",
                "pending",
                "outbox_full",
                "publish_failed",
            ):
                total[k] += ledger.get("counters", {}).get(k, 0)
            sync = (ledger.get("sync") or {}).get("counters", {})
            for k in ("sessions", "sessions_failed", "entries_received", "bytes_in"):
                total[f"sync_{k}"] += sync.get(k, 0)
            transport = doc.get("transport") or {}
            for verdict, n in transport.get("messages_in", {}).get(TOPIC_LEDGER, {}).items():
                total[f"ledger_gossip_in_{verdict}"] += n
            for reason, n in transport.get("drops", {}).items():
                total[f"drops_{reason}"] += n
        return total

    # -- writing --------------------------------------------------------------------------------

    def recipient(self, writer: Node) -> str:
        return self.rng.choice([n for n in self.nodes if n is not writer]).proc.peer_id

    def write_burst(self, count: int, threads_per_writer: int = 2) -> tuple[float, int]:
        """`count` transfers as fast as the writers take them: (seconds, acked)."""
        lock = threading.Lock()
        left = [count]
        acked = [0]
        heads: dict[str, str] = {}

        def run(writer: Node, seed: int) -> None:
            rng = random.Random(seed)
            others = [n.proc.peer_id for n in self.nodes if n is not writer]
            while True:
                with lock:
                    if left[0] <= 0:
                        return
                    left[0] -= 1
                h = writer.transfer(rng.choice(others))
                with lock:
                    if h is None:
                        continue
                    acked[0] += 1
                    # the last acked (with 2 in flight per writer it may be one before the
                    # head: the entry count confirms the rest)
                    heads[writer.name] = h

        t0 = time.perf_counter()
        workers = [
            threading.Thread(target=run, args=(w, i * 97 + k))
            for i, w in enumerate(self.writers)
            for k in range(threads_per_writer)
        ]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        self.expected += acked[0]
        self.heads |= heads
        return time.perf_counter() - t0, acked[0]

    def wait_held(
        self, node: Node, heads: list[str], target: int, timeout_s: float, interval_s: float
    ) -> float | None:
        """Seconds until `node` holds every head hash (cheap lookups) and `target` entries."""
        t0 = time.perf_counter()
        todo = list(heads)
        while time.perf_counter() - t0 < timeout_s:
            todo = [h for h in todo if not node.holds(h)]
            if not todo:
                doc = node.get("/ledger")
                if doc is not None and doc["entries"] >= target:
                    return time.perf_counter() - t0
            time.sleep(interval_s)
        return None


# ---------------------------------------------------------------------------------------------
# Phases
# ---------------------------------------------------------------------------------------------


def setup(args: argparse.Namespace, root: Path, log: Callable[[str], None]) -> Net:
    dirs = [root / f"node{i:02d}" for i in range(args.nodes)]
    idents = [init_data_dir(d) for d in dirs]
    genesis = build_genesis([(i.public_key, PER_NODE) for i in idents], [], {})
    genesis_path = root / "genesis.json"
    write_genesis(genesis, genesis_path)
    for d in dirs:
        install_genesis(d, genesis_path)
    nodes = [
        Node(NodeProcess(f"node{i:02d}", d, advert_interval_s=args.advert_s))
        for i, d in enumerate(dirs)
    ]
    step = max(1, args.nodes // args.writers)
    writers = [nodes[(1 + k * step) % args.nodes] for k in range(args.writers)]
    net = Net(
        root,
        nodes,
        writers,
        random.Random(args.seed),
        ThreadPoolExecutor(max_workers=args.nodes + 8),
        log=log,
    )
    t0 = time.perf_counter()
    nodes[0].proc.start([])
    net.wait_ready(nodes[0])
    seeds = nodes[1 : min(4, args.nodes)]
    for n in seeds:
        n.proc.start([nodes[0].proc.bootstrap_addr()])
    for n in seeds:
        net.wait_ready(n)
    ready = [nodes[0], *seeds]
    rest = nodes[len(ready) :]
    for n in rest:
        n.proc.start([r.proc.bootstrap_addr() for r in net.rng.sample(ready, min(2, len(ready)))])
    for n in rest:
        net.wait_ready(n)
    started_s = time.perf_counter() - t0
    log(f"{args.nodes} nodes ready in {started_s:.1f} s; waiting for writable replicas and mesh")

    def settled() -> bool:
        docs = net.each(lambda n: n.get("/status"))
        for d in docs:
            if not d or not (d.get("ledger") or {}).get("writable"):
                return False
            t = d.get("transport") or {}
            if t.get("peers_count", 0) < min(3, args.nodes - 1):
                return False
            if t.get("mesh", {}).get(TOPIC_LEDGER, 0) < min(2, args.nodes - 1):
                return False
        return True

    deadline = time.perf_counter() + START_TIMEOUT_S
    while not settled():
        if time.perf_counter() > deadline:
            raise RuntimeError("the network did not settle (writable replicas, ledger mesh)")
        time.sleep(0.5)
    counts = net.counts()
    net.expected = max(counts)
    net.phase_cpu["start"] = started_s
    log(f"settled {time.perf_counter() - t0:.1f} s after the first start; {net.expected} entries")
    return net


def measure_idle(net: Net, seconds: float) -> Doc:
    snap, t0 = net.cpu_snapshot(), time.perf_counter()
    time.sleep(seconds)
    cpu = net.cpu_since(snap)
    elapsed = time.perf_counter() - t0
    rss = net.rss()
    return {
        "idle_rss_mb_max": max(rss),
        "idle_rss_mb_avg": statistics.mean(rss),
        "idle_cpu_pct_per_node": 100 * cpu / elapsed / len(rss),
        "idle_window_s": elapsed,
    }


def measure_propagation(net: Net, writes: int, poll_s: float, timeout_s: float) -> Doc:
    uppers: list[float] = []
    lowers: list[float] = []
    missed = 0
    polls = [0]
    lock = threading.Lock()

    def poll(node: Node, h: str, t_ack: float) -> tuple[float, float] | None:
        last_miss = t_ack
        n = 0
        while True:
            t_req = time.perf_counter()
            held = node.holds(h)
            t_resp = time.perf_counter()
            n += 1
            if held:
                with lock:
                    polls[0] += n
                return max(0.0, last_miss - t_ack), t_resp - t_ack
            if t_resp - t_ack > timeout_s:
                with lock:
                    polls[0] += n
                return None
            last_miss = t_req
            time.sleep(max(0.0, t_req + poll_s - time.perf_counter()))

    snap, own0 = net.cpu_snapshot(), own_cpu_s()
    t_phase = time.perf_counter()
    for i in range(writes):
        writer = net.writers[i % len(net.writers)]
        h = writer.transfer(net.recipient(writer))
        t_ack = time.perf_counter()
        if h is None:
            missed += 1
            continue
        net.expected += 1
        net.heads[writer.name] = h
        others = [n for n in net.running() if n is not writer]
        results = list(net.pool.map(partial(poll, h=h, t_ack=t_ack), others))
        if any(r is None for r in results):
            missed += 1
            continue
        lowers.append(1000 * max(r[0] for r in results if r is not None))
        uppers.append(1000 * max(r[1] for r in results if r is not None))
        time.sleep(net.rng.uniform(0.1, 0.3))  # not in phase with the 50 ms batch window
    elapsed = time.perf_counter() - t_phase
    return {
        "propagation_p50_ms": pct(uppers, 50),
        "propagation_p95_ms": pct(uppers, 95),
        "propagation_max_ms": max(uppers, default=None),
        "propagation_p50_ms_lower": pct(lowers, 50),
        "propagation_p95_ms_lower": pct(lowers, 95),
        "propagation_poll_ms": 1000 * poll_s,
        "propagation_writes": writes,
        "propagation_missed": missed,
        "propagation_polls_per_s": polls[0] / elapsed,
        "propagation_cpu_s": net.cpu_since(snap),
        "propagation_bench_cpu_s": own_cpu_s() - own0,
    }


def sustained_step(net: Net, rate: float, duration_s: float, lag_s: float) -> Doc:
    per_writer = rate / len(net.writers)
    n_per_writer = max(1, round(per_writer * duration_s))
    lock = threading.Lock()
    acked = [0]
    failed = [0]
    lat: list[float] = []
    t0 = time.perf_counter() + 0.05

    def run(writer: Node) -> None:
        others = [n.proc.peer_id for n in net.nodes if n is not writer]
        rng = random.Random(writer.name)
        mine: list[float] = []
        ok = bad = 0
        for k in range(n_per_writer):  # open loop: the k-th write is due at t0 + k / rate
            delay = t0 + k / per_writer - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            t = time.perf_counter()
            h = writer.transfer(rng.choice(others))
            mine.append(time.perf_counter() - t)
            if h:
                net.heads[writer.name] = h  # one thread per writer: in order
            ok, bad = (ok + 1, bad) if h else (ok, bad + 1)
        with lock:
            acked[0] += ok
            failed[0] += bad
            lat.extend(mine)

    snap, own0 = net.cpu_snapshot(), own_cpu_s()
    c0 = net.counters()
    threads = [threading.Thread(target=run, args=(w,)) for w in net.writers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    t_end = time.perf_counter()
    # On schedule, the last write returns before the window ends; a writer that fell behind
    # stretches it (so a short step is not failed by one slow final acknowledgement).
    window = max(n_per_writer / per_writer, t_end - t0)
    net.expected += acked[0]
    caught = net.wait_all(net.expected, lag_s, interval_s=0.1)
    behind = None
    if caught is None:  # record how far behind, then let it drain before the next phase
        counts = net.counts()
        behind = net.expected - min(counts)
        drained = net.wait_all(net.expected, 120.0, interval_s=0.5)
        net.log(
            f"  {rate:g}/s: {behind} entries behind after {lag_s:g} s; "
            f"drained after {lag_s + (drained or float('nan')):.1f} s"
        )
    cpu = net.cpu_since(snap)
    delta = net.counters() - c0
    achieved = acked[0] / window
    holds = caught is not None and achieved >= 0.9 * rate and failed[0] == 0
    return {
        "target_eps": rate,
        "achieved_eps": achieved,
        "window_s": window,
        "acked": acked[0],
        "failed": failed[0],
        "write_ack_p50_ms": pct([x * 1000 for x in lat], 50),
        "write_ack_p95_ms": pct([x * 1000 for x in lat], 95),
        "all_replicas_after_s": caught,
        "behind_at_lag_bound": behind,
        "holds": holds,
        "nodes_cpu_s": cpu,
        "nodes_cpu_cores": cpu / (time.perf_counter() - t0),
        "bench_cpu_s": own_cpu_s() - own0,
        "added_gossip": delta["added_gossip"],
        "added_sync": delta["added_sync"],
        "published_batches": delta["published_batches"],
        "gossip_in": {
            k.removeprefix("ledger_gossip_in_"): v
            for k, v in delta.items()
            if k.startswith("ledger_gossip_in_")
        },
        "drops": {k.removeprefix("drops_"): v for k, v in delta.items() if k.startswith("drops_")},
    }


def measure_sustained(net: Net, rates: list[float], duration_s: float, lag_s: float) -> Doc:
    steps = []
    best = 0.0
    for rate in rates:
        step = sustained_step(net, rate, duration_s, lag_s)
        steps.append(step)
        net.log(
            f"  sustained {rate:g}/s: achieved {step['achieved_eps']:.0f}/s, "
            f"all replicas after {step['all_replicas_after_s']}, holds={step['holds']}"
        )
        if not step["holds"]:
            break
        best = max(best, step["achieved_eps"])
        time.sleep(1.0)
    return {"sustained_eps": best, "sustained_steps": steps}


def measure_catchup(net: Net, count: int, lag_timeout_s: float) -> Doc:
    victim = next(n for n in reversed(net.nodes) if n not in net.writers)
    victim.proc.stop()
    seconds, acked = net.write_burst(count)
    net.log(
        f"  wrote {acked} entries in {seconds:.1f} s ({acked / seconds:.0f}/s) with "
        f"{victim.name} down"
    )
    online_s = net.wait_all(net.expected, lag_timeout_s, interval_s=0.5)
    snap = net.cpu_snapshot()
    net.start(victim, ["--fault", "drop-ledger-gossip"])
    t_spawn = time.perf_counter()
    net.wait_ready(victim)
    t_ready = time.perf_counter()
    took = net.wait_held(victim, list(net.heads.values()), net.expected, 120.0, 0.05)
    doc = victim.get("/ledger") or {}
    sync = (doc.get("sync") or {}).get("counters", {})
    cpu = cpu_ticks(victim.pid() or 0) / CLK_TCK
    out = {
        "catchup_entries": acked,
        "catchup_s": took,
        "catchup_10k_s": took if acked == 10_000 else None,
        "catchup_start_to_ready_s": t_ready - t_spawn,
        "catchup_write_s": seconds,
        "burst_write_eps": acked / seconds,
        "catchup_online_converge_s": online_s,
        "catchup_poll_ms": 50.0,
        "catchup_victim_cpu_s": cpu,
        "catchup_net_cpu_s": net.cpu_since(snap),
        "catchup_sync_sessions": sync.get("sessions"),
        "catchup_sync_entries_received": sync.get("entries_received"),
        "catchup_sync_bytes_in": sync.get("bytes_in"),
        "catchup_added_gossip": (doc.get("counters") or {}).get("added_gossip", 0),
        "catchup_victim_entries": doc.get("entries"),
        "catchup_expected_entries": net.expected,
    }
    victim.proc.stop()  # back to a normal node for the next phase
    net.start(victim)
    net.wait_ready(victim)
    return out


def measure_heal(net: Net, group_size: int, count: int, lag_timeout_s: float) -> Doc:
    candidates = [n for n in net.nodes[1:] if n not in net.writers]
    group = candidates[-group_size:]
    net.each(lambda n: n.proc.stop(), group)
    seconds, acked = net.write_burst(count)
    online_s = net.wait_all(net.expected, lag_timeout_s, interval_s=0.5)
    snap = net.cpu_snapshot()
    t_first = time.perf_counter()
    for n in group:
        net.start(n)
    net.each(net.wait_ready, group)
    t_ready = time.perf_counter()
    per_node = net.each(
        lambda n: net.wait_held(n, list(net.heads.values()), net.expected, 120.0, 0.1), group
    )
    t_held = time.perf_counter()
    while not net.converged() and time.perf_counter() - t_held < 60:
        time.sleep(0.1)
    ok = net.converged()
    t_conv = time.perf_counter()
    return {
        "heal_mode": (
            f"crash partition: {len(group)} of {len(net.nodes)} nodes stopped (SIGTERM) "
            f"while the others wrote {acked} entries, then all restarted at once; "
            "from the last one's ready line to all replicas equal (simnet.netns can cut "
            "TCP between namespaces, but off 127.0.0.1 and with a process per control call)"
        ),
        "heal_group": len(group),
        "heal_entries": acked,
        "heal_converge_s": t_conv - t_ready if ok else None,
        "heal_from_first_spawn_s": t_conv - t_first if ok else None,
        "heal_restart_s": t_ready - t_first,
        "heal_per_node_held_s_max": max((x for x in per_node if x is not None), default=None),
        "heal_online_converge_s": online_s,
        "heal_write_s": seconds,
        "heal_net_cpu_s": net.cpu_since(snap),
        "heal_poll_ms": 100.0,
    }


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

GOALS = {  # key: (goal, higher is better)
    "propagation_p95_ms": (500.0, False),
    "sustained_eps": (200.0, True),
    "catchup_10k_s": (10.0, False),
    "heal_converge_s": (5.0, False),
}


def print_table(fig: Doc) -> None:
    from rich.console import Console
    from rich.table import Table

    def f(v: Any, fmt: str = "{:.1f}") -> str:
        return "-" if v is None else fmt.format(v) if isinstance(v, int | float) else str(v)

    console = Console(file=sys.stderr, width=150)  # stdout carries the JSON object alone
    t = Table(
        title=f"bench.ledger_net: {fig['config']['nodes']} node processes on "
        f"{fig['config']['cpus']} CPUs"
    )
    t.add_column("figure")
    t.add_column("value", justify="right")
    t.add_column("goal", justify="right")
    t.add_column("note")
    catchup_key = "catchup_10k_s" if fig.get("catchup_10k_s") is not None else "catchup_s"
    rows = [
        (
            "propagation_p50_ms",
            "{:.0f}",
            f"poll {fig.get('propagation_poll_ms'):.0f} ms; lower bound "
            f"{f(fig.get('propagation_p50_ms_lower'), '{:.0f}')}",
        ),
        (
            "propagation_p95_ms",
            "{:.0f}",
            f"lower bound {f(fig.get('propagation_p95_ms_lower'), '{:.0f}')}; "
            f"{fig.get('propagation_writes')} writes, {fig.get('propagation_missed')} missed",
        ),
        (
            "sustained_eps",
            "{:.0f}",
            f"{len(fig['config']['writers'])} writers; steps "
            + ", ".join(
                f"{s['target_eps']:g}{'✔' if s['holds'] else '✘'}"
                for s in fig.get("sustained_steps", [])
            ),
        ),
        (
            catchup_key,
            "{:.2f}",
            f"{fig.get('catchup_entries')} entries, anti-entropy only; written at "
            f"{f(fig.get('burst_write_eps'), '{:.0f}')}/s",
        ),
        (
            "heal_converge_s",
            "{:.2f}",
            f"crash partition of {fig.get('heal_group')} nodes, {fig.get('heal_entries')} entries",
        ),
        ("idle_rss_mb_max", "{:.0f}", f"avg {f(fig.get('idle_rss_mb_avg'), '{:.0f}')} MB"),
        ("idle_cpu_pct_per_node", "{:.1f}", "% of one core"),
    ]
    for key, fmt, note in rows:
        goal = GOALS.get(key.replace("catchup_s", "catchup_10k_s"))
        value = fig.get(key)
        mark = ""
        if goal is not None and value is not None:
            ok = value >= goal[0] if goal[1] else value <= goal[0]
            mark = " ✔" if ok else " ✘"
        t.add_row(
            key,
            f(value, fmt) + mark,
            "-" if goal is None else f"{'≥' if goal[1] else '≤'} {goal[0]:g}",
            note,
        )
    console.print(t)
    s = Table(title="sustained steps")
    for col in (
        "target/s",
        "achieved/s",
        "ack p95 ms",
        "all held after s",
        "behind",
        "cores",
        "gossip batches",
        "added gossip",
        "added sync",
        "drops",
    ):
        s.add_column(col, justify="right")
    for st in fig.get("sustained_steps", []):
        s.add_row(
            f"{st['target_eps']:g}",
            f(st["achieved_eps"], "{:.0f}"),
            f(st["write_ack_p95_ms"], "{:.0f}"),
            f(st["all_replicas_after_s"], "{:.2f}"),
            f(st["behind_at_lag_bound"], "{}"),
            f(st["nodes_cpu_cores"], "{:.2f}"),
            f(st["published_batches"], "{}"),
            f(st["added_gossip"], "{}"),
            f(st["added_sync"], "{}"),
            ", ".join(f"{k}={v}" for k, v in st["drops"].items()) or "-",
        )
    console.print(s)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ledger_net",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--nodes", type=int, default=24)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="6 nodes, small counts (~1 minute)")
    parser.add_argument("--json", type=Path, help="write the figures as JSON")
    parser.add_argument("--propagation", type=int, default=40, help="writes timed one at a time")
    parser.add_argument("--poll-ms", type=float, default=50.0)
    parser.add_argument("--rates", default="25,50,100,200,400", help="sustained steps, entries/s")
    parser.add_argument("--step-s", type=float, default=10.0)
    parser.add_argument(
        "--lag-s", type=float, default=5.0, help="bound for every replica to catch up"
    )
    parser.add_argument("--catchup", type=int, default=10_000)
    parser.add_argument(
        "--heal", type=int, default=2_000, help="entries written during the partition"
    )
    parser.add_argument("--heal-group", type=int, default=8)
    parser.add_argument("--idle-s", type=float, default=10.0)
    parser.add_argument("--advert-s", type=float, default=10.0, help="capacity advert interval")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the data dirs (printed)")
    args = parser.parse_args()
    if args.quick:
        args.nodes, args.writers = min(args.nodes, 6), min(args.writers, 3)
        args.propagation, args.rates, args.step_s = 10, "100,200", 3.0
        args.catchup, args.heal, args.heal_group, args.idle_s = 1000, 200, 2, 3.0
    rates = [float(r) for r in args.rates.split(",") if r]

    def log(msg: str) -> None:
        print(f"[bench.ledger_net] {msg}", file=sys.stderr, flush=True)

    root = Path(tempfile.mkdtemp(prefix="bench-ledger-net-"))
    fig: Doc = {
        "config": {
            "nodes": args.nodes,
            "cpus": os.cpu_count(),
            "loadavg_at_start": os.getloadavg(),
            "writers": [],
            "quick": args.quick,
            "poll_ms": args.poll_ms,
            "sustained_rates": rates,
            "step_s": args.step_s,
            "lag_bound_s": args.lag_s,
            "advert_interval_s": args.advert_s,
            "peers_target": NetworkConfig().peers_target,
            "sync_interval_s": LedgerNodeConfig().sync_interval_s,
            "sync_requests_per_s": LedgerNodeConfig().sync_requests_per_s,
            "sync_bytes_per_s": LedgerNodeConfig().sync_bytes_per_s,
            "publish_batch_window_s": ReplicaSettings().publish_batch_window_s,
            "gossip_entries_max": GOSSIP_ENTRIES_MAX,
            "sync_entries_max": SYNC_ENTRIES_MAX,
            "sqlite": "WAL, fsync per write (node default)",
            "data_dir_root": str(root),
        }
    }
    net: Net | None = None
    snap: dict[int, int] = {}
    t_all = time.perf_counter()
    try:
        net = setup(args, root, log)
        fig["config"]["writers"] = [w.name for w in net.writers]
        fig["start_s"] = net.phase_cpu["start"]
        fig["start_cpu_s"] = net.cpu_since({})
        snap = net.cpu_snapshot()
        fig |= measure_idle(net, args.idle_s)
        log(f"idle: {json.dumps({k: round(v, 1) for k, v in fig.items() if k.startswith('idle')})}")
        fig |= measure_propagation(net, args.propagation, args.poll_ms / 1000, 30.0)
        log(f"propagation p50 {fig['propagation_p50_ms']} ms, p95 {fig['propagation_p95_ms']} ms")
        fig |= measure_sustained(net, rates, args.step_s, args.lag_s)
        fig |= measure_catchup(net, args.catchup, 180.0)
        log(f"catch-up {fig['catchup_entries']} entries: {fig['catchup_s']} s")
        if args.nodes - 1 - len(net.writers) >= args.heal_group:
            fig |= measure_heal(net, args.heal_group, args.heal, 180.0)
            log(f"heal: {fig['heal_converge_s']} s")
        fig["after_rss_mb_max"] = max(net.rss())
        fig["totals"] = dict(net.counters())
    except Exception as exc:  # report what was measured before it (a benchmark, not a test)
        log(f"stopped early: {exc!r} (figures after this point are missing)")
        fig["error"] = str(exc)
    finally:
        if net is not None:
            fig["nodes_cpu_s_after_start"] = net.cpu_since(snap) if snap else None
            net.each(lambda n: n.proc.stop(), net.nodes)
            net.pool.shutdown()
        fig["bench_cpu_s"] = own_cpu_s()
        fig["loadavg_at_end"] = os.getloadavg()
        fig["wall_s"] = time.perf_counter() - t_all
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    fig["goals"] = {k: {"goal": g, "higher_is_better": hi} for k, (g, hi) in GOALS.items()}
    print_table(fig)
    print(json.dumps(fig, indent=2))
    if args.json:
        args.json.write_text(json.dumps(fig, indent=2) + "\n")
    sys.exit(1 if "error" in fig else 0)


if __name__ == "__main__":
    main()
