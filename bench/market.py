"""The prover market over real processes: `python -m bench.market [--nodes 6] [--jobs J]
[--model digits|cifar] [--json PATH] [--quick]`.

N real `dsperse-node run` processes (simnet.procs.NodeProcess, one genesis, 127.0.0.1, one proof
slot each) and jobs of the digits CNN (or, with `--model cifar`, the CIFAR LeNet at
`--max-logrows 15`: slow) submitted through the control API `POST /jobs` like any user. The
bundle is built once with `dsperse-node slice` into `out/bench-market/<model>/` and reused; its
dev SRS is copied into the requesters' caches (provers fetch it from the requester). Phases:
- idle: VmRSS per node after start, before any job;
- cold: one job at node 0 (bundle + SRS fetch and proving-key setup at the provers);
- saturation: J jobs submitted at once (threads) round-robin at `--requesters` nodes: slice
  proofs per minute over the window (first POST .. last job done) and core utilisation = CPU
  seconds of every node process and its reaped EZKL workers (/proc/PID/stat utime+stime+cutime+
  cstime) / (2 cores x window);
- warm: `--latency-jobs` jobs at node 0, one at a time, after the others (keys cached).
Per job: latency = from the POST /jobs reply to the GET /job poll (every 0.25 s) that says
"done" (the node's own `elapsed_s` is reported beside it), over its lower bound max(longest
slice proof, total prove seconds / min(2 cores, provers of the job)). Prove seconds are the
provers' `slice_proven` log events (pool wall time: spawn, witness, setup when cold, prove,
self-check), matched to the job by award hash (the result manifest names each slice's award).
A job is *warm* when each of its slices went to a prover that had proven that slice before.
Announcement latency: from the POST reply (and from the requester's `job_announced` log line)
until each prover's market core has decided on the job (its `bids_sent` + `jobs_skipped:*`
counters in `GET /jobs` grew; polled every `--poll-ms`): the prover logs nothing on a job.
Verification CPU: a sampler lists each node's children every 0.1 s (/proc/PID/task/*/children),
names each EZKL worker by the `op` of its request file, and gives it the rise of its parent's
cutime+cstime when it is reaped (exact when one worker is reaped between two samples); the
figure is checked against (verify workers counted) x (CPU of one verify worker, measured here
with getrusage(RUSAGE_CHILDREN) on the cold job's proofs). Traffic per job: gossip messages by
topic and requests by protocol from `/status` transport counters (summed over nodes), and TCP
payload bytes between node processes (`ss -tin` bytes_sent of sockets whose both ends are
nodes' p2p sockets; control-API sockets excluded), with the idle background rate subtracted.
Prints a rich table (stderr) and a JSON object (stdout); `--json PATH` writes it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from bench.control_http import http as control_http
from node.control import read_control_token
from node.genesis import build_genesis, install_genesis, write_genesis
from node.proof_verifier import get_data_cache_dir
from node.topics import TOPIC_JOBS, TOPIC_PROOFS
from simnet.procs import NodeProcess, init_data_dir

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "slicing" / "models"
MODEL_FILES = {
    "digits": (MODELS / "digits_cnn.onnx", MODELS / "digits_sample.json"),
    "cifar": (MODELS / "cifar_lenet.onnx", MODELS / "cifar_sample.json"),
}
PER_NODE = 10**12
BOND = 10_000
CORES = 2  # the lower bound's parallelism: this machine's cores
START_TIMEOUT_S = 180.0
HTTP_TIMEOUT_S = 20.0
JOB_POLL_S = 0.25
CLK_TCK = os.sysconf("SC_CLK_TCK")
Doc = dict[str, Any]


def log(msg: str) -> None:
    print(f"[bench.market] {msg}", file=sys.stderr, flush=True)


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


http = partial(control_http, timeout_s=HTTP_TIMEOUT_S)


def read_stat(pid: int) -> tuple[int, int, int]:
    """(utime+stime, cutime+cstime, start time) of a process in clock ticks; zeros if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0, 0, 0
    f = text.rpartition(")")[2].split()
    return int(f[11]) + int(f[12]), int(f[13]) + int(f[14]), int(f[19])


def read_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs (/proc/stat)."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = f[3] + f[4]
    return sum(f) - idle, sum(f)


@dataclass
class Node:
    proc: NodeProcess
    prover: bool
    token: str = ""
    addr: str = ""
    log_offset: int = 0
    events: list[Doc] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.proc.name

    @property
    def pid(self) -> int:
        return self.proc.popen.pid if self.proc.popen is not None else 0

    def refresh(self) -> None:
        self.addr = self.proc.control_addr
        self.token = read_control_token(self.proc.data_dir) or ""

    def get(self, path: str) -> Doc | None:
        try:
            status, doc = http(self.addr, "GET", path)
        except OSError:
            return None
        return doc if status == 200 and isinstance(doc, dict) else None

    def post(self, path: str, body: Doc) -> tuple[int, Any]:
        return http(self.addr, "POST", path, body, self.token)

    def read_events(self) -> list[Doc]:
        """New JSON log lines of the node since the last call (appended to `events`)."""
        path = self.proc.data_dir / "node.log"
        try:
            with path.open("rb") as f:
                f.seek(self.log_offset)
                data = f.read()
        except OSError:
            return []
        end = data.rfind(b"\n") + 1
        self.log_offset += end
        new = []
        for line in data[:end].splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict) and doc.get("event"):
                new.append(doc)
        self.events.extend(new)
        return new


# ---------------------------------------------------------------------------------------------
# EZKL workers: who spawned which op, and what CPU it used
# ---------------------------------------------------------------------------------------------


class WorkerSampler(threading.Thread):
    """Every `interval_s`: the children of each node process, named by their request's `op`.
    When children are reaped, the rise of the parent's cutime+cstime is shared among them in
    proportion to their last sampled CPU (exact for one), so CPU by op sums to the reaped
    total; a rise with no child seen goes to "unseen"."""

    def __init__(self, nodes: list[Node], interval_s: float) -> None:
        super().__init__(daemon=True)
        self.nodes, self.interval_s = nodes, interval_s
        self.lock = threading.Lock()
        self.cpu_ticks: defaultdict[str, float] = defaultdict(float)
        self.count: Counter[str] = Counter()
        self.by_node: dict[str, defaultdict[str, float]] = {
            n.name: defaultdict(float) for n in nodes
        }
        self.count_by_node: dict[str, Counter[str]] = {n.name: Counter() for n in nodes}
        self.live_total = 0
        self.stop_event = threading.Event()
        self._state: dict[int, tuple[int, dict[int, tuple[str, int]]]] = {}  # pid -> c, kids
        self._owed: dict[int, int] = {}

    def run(self) -> None:
        while not self.stop_event.wait(self.interval_s):
            live = 0
            for node in self.nodes:
                live += self._sample(node)
            self.live_total = live

    def _sample(self, node: Node) -> int:
        pid = node.pid
        if not pid:
            return 0
        _, creaped, _ = read_stat(pid)
        kids = self._children(pid)
        prev_c, prev_kids = self._state.get(pid, (creaped, {}))
        now: dict[int, tuple[str, int]] = {}
        for kid in kids:
            op = prev_kids[kid][0] if kid in prev_kids else ""
            op = op or self._op_of(kid)  # "" until exec'd: forked, still the node's cmdline
            now[kid] = (op, read_stat(kid)[0])
        gone = [prev_kids[k] for k in prev_kids if k not in now]
        rise = creaped - prev_c - self._owed.get(pid, 0)
        with self.lock:
            if gone:
                seen = sum(max(1, t) for _, t in gone)
                scale = rise / seen if rise >= seen else 1.0  # late parent stat: use the samples
                self._owed[pid] = max(0, seen - rise) if rise < seen else 0
                for op, t in gone:
                    op = op or "other"
                    share = max(1, t) * scale
                    self.cpu_ticks[op] += share
                    self.by_node[node.name][op] += share
                    self.count[op] += 1
                    self.count_by_node[node.name][op] += 1
            else:
                self._owed[pid] = max(0, -rise)
                if rise > 0:
                    self.cpu_ticks["unseen"] += rise
        self._state[pid] = (creaped, now)
        return len(now)

    @staticmethod
    def _children(pid: int) -> list[int]:
        out: list[int] = []
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            return out
        for tid in tids:
            try:
                out += [
                    int(x) for x in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()
                ]
            except OSError:
                continue
        return out

    @staticmethod
    def _op_of(pid: int) -> str:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return ""
        if b"slicing.worker" not in argv:
            return "" if b"simnet" in argv else "other"  # not exec'd yet, or not a worker
        try:
            i = argv.index(b"slicing.worker")
            return str(json.loads(Path(argv[i + 1].decode()).read_text())["op"])
        except (OSError, ValueError, IndexError, KeyError):
            return "other"

    def counts_by_node(self) -> dict[str, dict[str, int]]:
        with self.lock:
            return {k: dict(v) for k, v in self.count_by_node.items()}

    def snapshot(self) -> tuple[dict[str, float], dict[str, int]]:
        with self.lock:
            return (
                {k: v / CLK_TCK for k, v in self.cpu_ticks.items()},
                dict(self.count),
            )


def diff(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)}


# ---------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------


@dataclass
class Net:
    root: Path
    bundle: Path
    input: Path
    nodes: list[Node]
    requesters: list[Node]
    sampler: WorkerSampler
    pool: ThreadPoolExecutor
    history: set[tuple[str, int]] = field(default_factory=set)  # (prover, slice) proven before
    prewarmed: bool = False  # every prover holds every slice's proving key
    jobs_run: int = 0

    def each(self, fn: Callable[[Node], Any], nodes: list[Node] | None = None) -> list[Any]:
        return list(self.pool.map(fn, nodes if nodes is not None else self.nodes))

    def cpu_ticks(self) -> dict[int, int]:
        return {n.pid: sum(read_stat(n.pid)[:2]) for n in self.nodes}

    def cpu_since(self, snap: dict[int, int]) -> float:
        now = self.cpu_ticks()
        return sum(now[p] - snap.get(p, 0) for p in now) / CLK_TCK

    def traffic(self) -> Doc:
        """Gossip and request counters summed over nodes, and TCP bytes between nodes."""
        out: Counter[str] = Counter()
        for st in self.each(lambda n: n.get("/status")):
            t = (st or {}).get("transport") or {}
            for topic, n in t.get("messages_out", {}).items():
                out[f"out {topic}"] += n
            for topic, verdicts in t.get("messages_in", {}).items():
                out[f"in {topic}"] += sum(verdicts.values())
            for proto, n in t.get("requests_out", {}).items():
                out[f"req {proto}"] += n
        out |= tcp_bytes_between(self.nodes)
        return dict(out)

    def wait_quiet(self, timeout_s: float) -> None:
        """Until no EZKL worker runs under any node (claims checked everywhere), twice."""
        deadline = time.monotonic() + timeout_s
        calm = 0
        while time.monotonic() < deadline and calm < 2:
            time.sleep(max(0.3, self.sampler.interval_s * 2))
            calm = calm + 1 if self.sampler.live_total == 0 else 0
        for n in self.nodes:
            n.read_events()


def tcp_bytes_between(nodes: list[Node]) -> Counter[str]:
    """TCP payload bytes sent on established sockets owned by node processes, excluding their
    control-API sockets. Closed sockets are lost (libp2p keeps its connections)."""
    pids = {n.pid for n in nodes}
    control_ports = {n.addr.rpartition(":")[2] for n in nodes}
    try:
        text = subprocess.run(
            ["ss", "-tinpH", "state", "established"], capture_output=True, text=True, timeout=20
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return Counter()
    total: Counter[str] = Counter()
    head: list[str] | None = None
    for line in text.splitlines():
        if not line.startswith(("\t", " ")):
            head = line.split()
            continue
        if head is None or len(head) < 5:
            continue
        local, peer = head[2].rpartition(":")[2], head[3].rpartition(":")[2]
        owner = next(
            (
                int(p.split("=")[1])
                for p in head[4].replace(")", ",").split(",")
                if p.startswith("pid=")
            ),
            0,
        )
        head = None
        if owner not in pids or local in control_ports or peer in control_ports:
            continue
        for item in line.split():
            if item.startswith("bytes_sent:"):
                total["tcp_bytes_sent"] += int(item.split(":")[1])
                total["tcp_sockets"] += 1
    return total


def build_bundle(model: str, store: Path, max_logrows: int) -> tuple[Path, Path]:
    """The bundle and the cache it was built with (its dev SRS), built once per model."""
    onnx, sample = MODEL_FILES[model]
    bundle, cache = store / model / "bundle", store / model / "cache"
    if (bundle / "manifest.json").is_file() and list((cache / "srs").glob("*.srs")):
        return bundle, cache
    log(f"building the {model} bundle (once) into {bundle}")
    shutil.rmtree(store / model, ignore_errors=True)
    t0 = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "simnet",
            "slice",
            str(onnx),
            "--input",
            str(sample),
            "--out",
            str(bundle),
            "--max-logrows",
            str(max_logrows),
            "--cache-dir",
            str(cache),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=7200,
    )
    if done.returncode != 0:
        raise RuntimeError(f"slice failed: {done.stderr[-2000:]}")
    log(f"bundle built in {time.perf_counter() - t0:.0f} s")
    return bundle, cache


def setup(args: argparse.Namespace, root: Path) -> Net:
    bundle, build_cache = build_bundle(args.model, args.store, args.max_logrows)
    dirs = [root / f"node{i}" for i in range(args.nodes)]
    idents = [init_data_dir(d) for d in dirs]
    genesis = build_genesis(
        [(i.public_key, PER_NODE) for i in idents],
        [(i.public_key, BOND) for i in idents],
        {"award_bond_min": 100},
    )
    write_genesis(genesis, root / "genesis.json")
    for d in dirs:
        install_genesis(d, root / "genesis.json")
    for d in dirs[: args.requesters]:  # the model owners hold the SRS; provers fetch it
        srs = get_data_cache_dir(d) / "srs"
        srs.mkdir(parents=True, exist_ok=True)
        for f in (build_cache / "srs").glob("*.srs"):
            shutil.copy2(f, srs / f.name)
    nodes = []
    for i, d in enumerate(dirs):
        proc = NodeProcess(f"node{i}", d, advert_interval_s=args.advert_s)
        prover = i < args.provers
        proc.extra_args = [] if prover else ["--no-prove"]
        nodes.append(Node(proc, prover))
    sampler = WorkerSampler(nodes, 0.1 if args.nodes <= 8 else 0.25)
    pool = ThreadPoolExecutor(max(8, args.nodes + 2))
    net = Net(
        root, bundle, MODEL_FILES[args.model][1], nodes, nodes[: args.requesters], sampler, pool
    )
    try:
        start_and_settle(net, args)
    except BaseException:  # never leave node processes behind a failed start
        net.each(lambda n: n.proc.stop())
        pool.shutdown()
        raise
    sampler.start()
    return net


def start_and_settle(net: Net, args: argparse.Namespace) -> None:
    nodes = net.nodes
    t0 = time.perf_counter()

    def wait_ready(n: Node) -> None:
        if not n.proc.wait_ready(args.start_timeout_s):
            tail = (n.proc.data_dir / "node.log").read_text()[-2000:]
            raise RuntimeError(f"{n.name} did not start: {tail}")
        n.refresh()

    rng = random.Random(args.seed)
    nodes[0].proc.start([])
    wait_ready(nodes[0])
    seeds = nodes[1 : min(4, args.nodes)]
    for n in seeds:
        n.proc.start([nodes[0].proc.bootstrap_addr()])
    net.each(wait_ready, seeds)
    ready = [nodes[0], *seeds]
    rest = nodes[len(ready) :]
    for n in rest:
        n.proc.start([r.proc.bootstrap_addr() for r in rng.sample(ready, min(2, len(ready)))])
    net.each(wait_ready, rest)
    log(f"{args.nodes} nodes ready in {time.perf_counter() - t0:.1f} s; waiting for the mesh")

    missing: Counter[str] = Counter()

    def settled() -> bool:
        missing.clear()
        for d in net.each(lambda n: n.get("/status")):
            t = (d or {}).get("transport") or {}
            if not d:
                missing["no /status answer"] += 1
            elif not (d.get("ledger") or {}).get("writable"):
                missing["not writable"] += 1
            elif t.get("peers_count", 0) < min(3, args.nodes - 1):
                missing["under 3 peers"] += 1
            elif min(t.get("mesh", {}).get(x, 0) for x in (TOPIC_JOBS, TOPIC_PROOFS)) < 1:
                missing["no jobs/proofs mesh peer"] += 1
        return not missing

    deadline = time.perf_counter() + args.start_timeout_s
    while not settled():
        if time.perf_counter() > deadline:
            raise RuntimeError(f"the network did not settle: nodes {dict(missing)}")
        time.sleep(0.5)
    log(f"settled {time.perf_counter() - t0:.1f} s after the first start")


# ---------------------------------------------------------------------------------------------
# Jobs
# ---------------------------------------------------------------------------------------------


@dataclass
class Job:
    job_id: str
    requester: Node
    out: Path
    t_reply: float  # time.time() of the POST /jobs reply
    t_done: float | None = None  # of the poll that first showed "done" (or "failed")
    doc: Doc = field(default_factory=dict)
    figures: Doc = field(default_factory=dict)


def submit(net: Net, requester: Node, args: argparse.Namespace, deadline_s: float) -> Job:
    net.jobs_run += 1
    out = net.root / "results" / f"job{net.jobs_run:03d}"
    out.parent.mkdir(exist_ok=True)
    body = {
        "bundle": str(net.bundle),
        "input": str(net.input),
        "out": str(out),
        "deadline_s": deadline_s,
        "slice_deadline_s": args.slice_deadline_s,
    }
    status, doc = requester.post("/jobs", body)
    t = time.time()
    if status != 200 or not isinstance(doc, dict):
        raise RuntimeError(f"POST /jobs at {requester.name}: {status} {doc}")
    return Job(doc["job_id"], requester, out, t)


FINAL = ("done", "failed")


def wait_one(job: Job, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        doc = job.requester.get(f"/job?id={job.job_id}")
        if doc and doc.get("state") in FINAL:
            job.t_done, job.doc = time.time(), doc
            return
        time.sleep(JOB_POLL_S)
    raise RuntimeError(f"job {job.job_id[:16]} not done after {timeout_s:.0f} s")


def wait_many(jobs: list[Job], timeout_s: float) -> None:
    """One `GET /jobs` per requester every 0.25 s (not one request per job)."""
    deadline = time.monotonic() + timeout_s
    by_req: dict[str, list[Job]] = {}
    for j in jobs:
        by_req.setdefault(j.requester.name, []).append(j)
    while any(j.t_done is None for j in jobs):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{sum(j.t_done is None for j in jobs)} jobs not done in time")
        for group in by_req.values():
            if all(j.t_done is not None for j in group):
                continue
            doc = group[0].requester.get("/jobs") or {}
            docs = {d["job_id"]: d for d in doc.get("jobs", [])}
            now = time.time()
            for j in group:
                d = docs.get(j.job_id)
                if j.t_done is None and d and d.get("state") in FINAL:
                    j.t_done, j.doc = now, d
        time.sleep(JOB_POLL_S)


def decided(node: Node) -> int | None:
    """Jobs this node's market core has decided on (bid or skipped)."""
    doc = node.get("/jobs")
    if doc is None:
        return None
    core = (doc.get("market") or {}).get("core") or {}
    return sum(v for k, v in core.items() if k == "bids_sent" or k.startswith("jobs_skipped"))


def watch_announce(net: Net, requester: Node, poll_s: float) -> Callable[[float], list[float]]:
    """Start before the POST; call the result with the reply time: seconds until each other
    node decided on the job (None entries dropped: not seen within 15 s)."""
    others = [n for n in net.nodes if n is not requester]
    base = dict(zip([n.name for n in others], net.each(decided, others), strict=True))

    def finish(t_reply: float) -> list[float]:
        def poll(n: Node) -> float | None:
            while time.time() - t_reply < 15.0:
                t_req = time.time()
                got = decided(n)
                if got is not None and got > (base[n.name] or 0):
                    return time.time() - t_reply
                time.sleep(max(0.0, t_req + poll_s - time.time()))
            return None

        return [x for x in net.each(poll, others) if x is not None]

    return finish


def pool_prove_s(node: Node) -> float:
    """Seconds this node's prover pool spent proving, setup excluded (histogram sums)."""
    doc = node.get("/jobs") or {}
    pool = (doc.get("market") or {}).get("pool") or {}
    hist = (pool.get("prove_s_histogram") or {}).get("logrows") or {}
    return float(sum(h.get("sum_s", 0.0) for h in hist.values()))


def analyse(net: Net, job: Job, pool_delta: dict[str, float] | None = None) -> Doc:
    """Match the job's slices to the provers' log events; latency over its lower bound."""
    for n in net.nodes:
        n.read_events()
    events = [(n, e) for n in net.nodes for e in n.events]
    short = job.job_id[:16]
    fig: Doc = {
        "job": short,
        "state": job.doc.get("state"),
        "requester": job.requester.name,
        "latency_s": (job.t_done or job.t_reply) - job.t_reply,
        "elapsed_s": job.doc.get("elapsed_s"),
    }
    try:
        manifest = json.loads((job.out / "manifest.json").read_text())
    except (OSError, ValueError):
        fig["error"] = f"no result manifest ({job.doc.get('reason')})"
        return fig
    slices = []
    warm = True
    for s in manifest["slices"]:
        award = s["award"][:16]
        proven = [(n, e) for n, e in events if e["event"] == "slice_proven" and e["award"] == award]
        won = [e for _, e in events if e["event"] == "award_won" and e.get("award") == award]
        prep = [e for _, e in events if e["event"] == "award_prepared" and e.get("award") == award]
        if not proven:
            fig["error"] = f"no slice_proven event for slice {s['index']}"
            return fig
        node, ev = proven[-1]
        key = (s["prover"], int(s["index"]))
        warm &= net.prewarmed or key in net.history
        slices.append(
            {
                "index": s["index"],
                "prover": node.name,
                "round": s["round"],
                "prove_s": float(ev["seconds"]),
                "proven_ts": ev["ts"],
                "won_ts": won[-1]["ts"] if won else None,
                "prepare_s": prep[-1]["seconds"] if prep else None,
            }
        )
    for s in manifest["slices"]:
        net.history.add((s["prover"], int(s["index"])))
    prove = [s["prove_s"] for s in slices]
    provers = len({s["prover"] for s in slices})
    bound = max(max(prove), sum(prove) / min(CORES, provers))
    announced = [
        e["ts"]
        for n, e in events
        if n is job.requester and e["event"] == "job_announced" and e.get("job") == short
    ]
    finished = [
        e["ts"]
        for n, e in events
        if n is job.requester and e["event"] == "job_finished" and e.get("job") == short
    ]
    t_ann = announced[0] if announced else None
    t_fin = finished[-1] if finished else None
    won_ts = [s["won_ts"] for s in slices if s["won_ts"] is not None]
    starts = [s["proven_ts"] - s["prove_s"] for s in slices]
    last_proof = max(s["proven_ts"] for s in slices)

    def span(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round(b - a, 3)

    if pool_delta is not None:  # key setup = pool wall - the pool's setup-free prove seconds
        on_node: dict[str, float] = defaultdict(float)
        for s in slices:
            on_node[s["prover"]] += s["prove_s"]
        for s in slices:
            setup = max(0.0, on_node[s["prover"]] - pool_delta.get(s["prover"], 0.0))
            s["setup_s"] = round(setup * s["prove_s"] / on_node[s["prover"]], 2)
        bare = [s["prove_s"] - s["setup_s"] for s in slices]
        fig["bound_s_without_setup"] = max(max(bare), sum(bare) / min(CORES, provers))
    fig |= {
        "warm": warm,
        "slices": slices,
        "provers": provers,
        "prove_s_sum": sum(prove),
        "bound_s": bound,
        "latency_ratio": fig["latency_s"] / bound,
        "latency_ratio_node": (fig["elapsed_s"] or 0) / bound,
        "breakdown_s": {
            "reply_to_announce": span(job.t_reply, t_ann),
            "announce_to_award": span(t_ann, min(won_ts) if won_ts else None),
            "award_to_prove_start": span(min(won_ts) if won_ts else None, min(starts)),
            "prove_span": span(min(starts), last_proof),
            "last_proof_to_finished": span(last_proof, t_fin),
            "finished_to_poll": span(t_fin, job.t_done),
        },
        "rounds_max": max(int(s["round"]) for s in slices),
    }
    return fig


def prewarm_keys(net: Net, build_cache: Path) -> int:
    """Copy the proving keys the bundle's builder derived into every prover's cache, as if
    each had proven each slice once (keys are deterministic and cached by circuit and SRS)."""
    copied = 0
    for n in net.nodes:
        if not n.prover:
            continue
        dst = get_data_cache_dir(n.proc.data_dir) / "pk"
        for src in (build_cache / "pk").iterdir():
            if not (dst / src.name).exists():
                shutil.copytree(src, dst / src.name)
                copied += 1
    net.prewarmed = True
    return copied


def proofs_made(net: Net, before: dict[str, int]) -> int:
    """Slice proofs the sampler saw made since `before` (prove workers reaped)."""
    return net.sampler.snapshot()[1].get("prove", 0) - before.get("prove", 0)


def run_sequential(net: Net, args: argparse.Namespace, what: str) -> Job:
    net.wait_quiet(120.0)
    requester = net.requesters[0]
    finish = watch_announce(net, requester, args.poll_ms / 1000)
    pool0 = dict(zip([n.name for n in net.nodes], net.each(pool_prove_s), strict=True))
    job = submit(net, requester, args, args.deadline_s)
    job.figures["announce_s"] = finish(job.t_reply)
    wait_one(job, args.deadline_s + 60)
    net.wait_quiet(120.0)
    pool1 = dict(zip([n.name for n in net.nodes], net.each(pool_prove_s), strict=True))
    job.figures |= analyse(net, job, {k: pool1[k] - pool0[k] for k in pool1})
    f = job.figures
    log(
        f"{what} job {f['job']}: {f['state']} in {f['latency_s']:.1f} s (node "
        f"{f['elapsed_s']} s), bound {f.get('bound_s', 0):.1f} s, ratio "
        f"{f.get('latency_ratio', float('nan')):.2f}, warm={f.get('warm')}; "
        f"{f.get('breakdown_s')}"
    )
    return job


def measure_verify_cost(net: Net, job: Job, build_cache: Path, reps: int) -> Doc:
    """CPU and wall of one EZKL verify worker (spawned the node's way) on the job's proofs."""
    from slicing.bundle import load_bundle
    from slicing.prover import EzklVerifier

    bundle = load_bundle(net.bundle)
    verifier = EzklVerifier({bundle.bundle_id: bundle}, build_cache)
    cpu, wall = [], []
    for proof_file in sorted((job.out / "proofs").glob("*.proof")):
        index, proof = int(proof_file.stem), proof_file.read_bytes()
        for _ in range(reps):
            r0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
            ok = verifier.verify_as(bundle, index, proof)
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            wall.append(time.perf_counter() - t0)
            cpu.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
            if not ok:
                raise RuntimeError(f"the proof of slice {index} does not verify")
    return {
        "verify_one_cpu_s": statistics.mean(cpu),
        "verify_one_wall_s": statistics.mean(wall),
        "verify_one_samples": len(cpu),
    }


def measure_saturation(net: Net, args: argparse.Namespace, count: int) -> Doc:
    net.wait_quiet(120.0)
    snap, m0, w0 = net.cpu_ticks(), machine_ticks(), net.sampler.snapshot()
    load0 = os.getloadavg()
    t0 = time.time()
    reqs = [net.requesters[i % len(net.requesters)] for i in range(count)]
    jobs = list(net.pool.map(lambda r: submit(net, r, args, args.sat_deadline_s), reqs))
    t_posted = time.time()
    log(f"saturation: {count} jobs posted in {t_posted - t0:.1f} s")
    wait_many(jobs, args.sat_deadline_s + 60)
    t_end = max(j.t_done or 0 for j in jobs)
    cpu = net.cpu_since(snap)
    m1, w1 = machine_ticks(), net.sampler.snapshot()
    load1 = os.getloadavg()
    window = t_end - t0
    net.wait_quiet(180.0)
    figs = [analyse(net, j) for j in jobs]
    for j, f in zip(jobs, figs, strict=True):
        j.figures = f
    proofs = [
        e
        for n in net.nodes
        for e in n.events
        if e["event"] == "slice_proven" and t0 <= e["ts"] <= t_end + 0.5
    ]
    by_op = diff(w1[0], w0[0])
    done = [f for f in figs if f.get("state") == "done"]
    log(
        f"saturation: {len(done)}/{count} done in {window:.1f} s, {len(proofs)} proofs, "
        f"nodes used {cpu:.0f} CPU s = {100 * cpu / (CORES * window):.0f} % of {CORES} cores"
    )
    return {
        "sat_jobs": count,
        "sat_jobs_done": len(done),
        "sat_jobs_failed": dict(
            Counter(j.doc.get("reason") or "?" for j in jobs if j.doc.get("state") != "done")
        ),
        "sat_window_s": window,
        "sat_post_s": t_posted - t0,
        "proofs_per_min": 60 * len(proofs) / window,
        "sat_proofs": len(proofs),
        "core_utilisation": cpu / (CORES * window),
        "sat_nodes_cpu_s": cpu,
        "sat_cpu_s_by_op": by_op,
        "sat_workers_by_op": {
            k: v - w0[1].get(k, 0) for k, v in w1[1].items() if v - w0[1].get(k, 0)
        },
        "sat_prove_s_sum": sum(float(e["seconds"]) for e in proofs),
        "sat_machine_busy": (m1[0] - m0[0]) / max(1, m1[1] - m0[1]),
        "sat_nodes_share_of_busy": cpu / max(1e-9, (m1[0] - m0[0]) / CLK_TCK),
        "sat_loadavg": [load0, load1],
        "sat_latency_s_p50": pct([f["latency_s"] for f in done], 50),
        "sat_latency_s_max": max((f["latency_s"] for f in done), default=None),
        "sat_rounds_max": max((f.get("rounds_max", 0) for f in done), default=None),
        "sat_job_figures": figs,
    }


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

GOALS = {  # key: (goal, higher is better)
    "latency_ratio": (1.15, False),
    "core_utilisation": (0.90, True),
    "idle_rss_mb_max": (120.0, False),
}


def per_job_traffic(t0: Doc, t1: Doc, idle_rate: Doc, seconds: float, jobs: int) -> Doc:
    out: Doc = {}
    for key in sorted(set(t1) | set(t0)):
        if key == "tcp_sockets":
            continue
        gross = (t1.get(key, 0) - t0.get(key, 0)) / jobs
        net_ = gross - idle_rate.get(key, 0) * seconds / jobs
        out[key] = {"per_job": round(gross, 1), "per_job_less_idle": round(net_, 1)}
    return out


def print_table(fig: Doc) -> None:
    from rich.console import Console
    from rich.table import Table

    def f(v: Any, fmt: str = "{:.2f}") -> str:
        return "-" if v is None else fmt.format(v) if isinstance(v, int | float) else str(v)

    c = fig["config"]
    console = Console(file=sys.stderr, width=160)  # stdout carries the JSON object alone
    t = Table(
        title=f"bench.market: {c['nodes']} node processes ({c['provers']} prove), "
        f"{c['model']} bundle, {c['cpus']} CPUs, load {c['loadavg_at_start'][0]:.1f}"
        f" -> {f(fig.get('loadavg_at_end', [None])[0], '{:.1f}')}"
    )
    for col in ("figure", "value", "goal", "note"):
        t.add_column(col, justify="right" if col in ("value", "goal") else "left")
    v = fig.get("verify") or {}
    rows = [
        (
            "latency_ratio",
            "{:.2f}",
            f"warm jobs, median of {fig.get('warm_jobs')}; max "
            f"{f(fig.get('latency_ratio_max'))}; by the node's elapsed_s "
            f"{f(fig.get('latency_ratio_node'))}",
        ),
        (
            "latency_ratio_cold",
            "{:.2f}",
            f"first job: {f(fig.get('cold_latency_s'), '{:.1f}')} s over the bound without key "
            f"setup {f(fig.get('cold_bound_s_without_setup'), '{:.1f}')} s (setup "
            f"{fig.get('cold_setup_s')} s, fetch {fig.get('cold_prepare_s')} s)",
        ),
        ("warm_latency_s", "{:.1f}", f"bound {f(fig.get('warm_bound_s'), '{:.1f}')} s"),
        (
            "proofs_per_min",
            "{:.1f}",
            f"{fig.get('sat_jobs')} jobs at once, "
            f"{fig.get('sat_proofs')} proofs in {f(fig.get('sat_window_s'), '{:.0f}')} s; "
            f"{fig.get('sat_jobs_done')} done, failed: {fig.get('sat_jobs_failed') or 0}",
        ),
        (
            "core_utilisation",
            "{:.0%}",
            f"nodes + workers CPU / ({CORES} x window); machine "
            f"busy {f(fig.get('sat_machine_busy'), '{:.0%}')}, nodes' share of it "
            f"{f(fig.get('sat_nodes_share_of_busy'), '{:.0%}')}",
        ),
        (
            "verify_cpu_s_per_job",
            "{:.2f}",
            f"sampled workers; estimate "
            f"{f(v.get('verify_cpu_s_per_job_estimate'))} = "
            f"{f(v.get('verify_runs_per_job'), '{:.1f}')}"
            f" runs x {f(v.get('verify_one_cpu_s'))} s",
        ),
        (
            "announce_p95_ms",
            "{:.0f}",
            f"POST reply -> each node decided; p50 "
            f"{f(fig.get('announce_p50_ms'), '{:.0f}')}; gossip alone p95 "
            f"{f(fig.get('announce_gossip_p95_ms'), '{:.0f}')} ms",
        ),
        ("idle_rss_mb_max", "{:.0f}", f"mean {f(fig.get('idle_rss_mb_mean'), '{:.0f}')} MB"),
        ("bytes_per_job", "{:,.0f}", "TCP payload between nodes, idle rate subtracted"),
    ]
    for key, fmt, note in rows:
        goal, value = GOALS.get(key), fig.get(key)
        mark = ""
        if goal is not None and value is not None:
            mark = " ✔" if (value >= goal[0] if goal[1] else value <= goal[0]) else " ✘"
        t.add_row(
            key,
            f(value, fmt) + mark,
            "-" if goal is None else f"{'≥' if goal[1] else '≤'} {goal[0]:g}",
            note,
        )
    console.print(t)
    s = Table(title="jobs (one at a time) and where their time went (s)")
    cols = (
        "job",
        "kind",
        "latency",
        "elapsed",
        "bound",
        "ratio",
        "provers",
        "announce",
        "→award",
        "→prove",
        "prove span",
        "→finished",
        "→polled",
    )
    for col in cols:
        s.add_column(col, justify="right")
    for j in fig.get("sequential_jobs", []):
        b = j.get("breakdown_s") or {}
        s.add_row(
            j["job"][:8],
            j["kind"],
            f(j["latency_s"], "{:.1f}"),
            f(j.get("elapsed_s"), "{:.1f}"),
            f(j.get("bound_s"), "{:.1f}"),
            f(j.get("latency_ratio")),
            f(j.get("provers"), "{}"),
            f(b.get("reply_to_announce")),
            f(b.get("announce_to_award")),
            f(b.get("award_to_prove_start")),
            f(b.get("prove_span")),
            f(b.get("last_proof_to_finished")),
            f(b.get("finished_to_poll")),
        )
    console.print(s)
    m = Table(title="traffic per job (summed over nodes; idle background subtracted)")
    for col in ("counter", "per job", "less idle"):
        m.add_column(col, justify="right" if col != "counter" else "left")
    for key, val in (fig.get("traffic_per_job") or {}).items():
        m.add_row(key, f(val["per_job"], "{:,.1f}"), f(val["per_job_less_idle"], "{:,.1f}"))
    console.print(m)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.market",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--nodes", type=int, default=6)
    parser.add_argument(
        "--jobs", type=int, help="saturation jobs (default: 2 x prover slots in slice tasks)"
    )
    parser.add_argument("--latency-jobs", type=int, default=3, help="warm jobs one at a time")
    parser.add_argument("--model", choices=sorted(MODEL_FILES), default="digits")
    parser.add_argument("--max-logrows", type=int, default=15)
    parser.add_argument("--requesters", type=int, default=2, help="saturation submitters")
    parser.add_argument("--provers", type=int, help="nodes that prove (default all, max 12)")
    parser.add_argument("--quick", action="store_true", help="4 nodes, 2 jobs (a few minutes)")
    parser.add_argument("--json", type=Path, help="write the figures as JSON")
    parser.add_argument("--poll-ms", type=float, help="announcement polls (50; 100 above 8 nodes)")
    parser.add_argument("--idle-s", type=float, default=10.0)
    parser.add_argument("--advert-s", type=float, help="capacity adverts (2 s; 10 above 8 nodes)")
    parser.add_argument("--start-timeout-s", type=float, help="start and settle (180 + 10/node)")
    parser.add_argument("--deadline-s", type=float, default=900.0)
    parser.add_argument("--sat-deadline-s", type=float, default=3600.0)
    parser.add_argument("--slice-deadline-s", type=float, default=300.0)
    parser.add_argument(
        "--store",
        type=Path,
        default=REPO / "out" / "bench-market",
        help="where the bundle is built once and reused",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--no-prewarm",
        action="store_true",
        help="after the cold job, let keys warm up by proving only (default: copy the builder's "
        "proving keys into every prover's cache, so saturation and warm jobs are all warm)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the data dirs (printed)")
    args = parser.parse_args()
    if args.quick:
        args.nodes, args.latency_jobs, args.idle_s = 4, 1, 5.0
        args.jobs = args.jobs or 2
    args.poll_ms = args.poll_ms or (50.0 if args.nodes <= 8 else 100.0)
    args.advert_s = args.advert_s or (2.0 if args.nodes <= 8 else 10.0)
    args.start_timeout_s = args.start_timeout_s or START_TIMEOUT_S + 10.0 * args.nodes
    args.provers = min(args.nodes, args.provers or 12)
    args.requesters = max(1, min(args.requesters, args.provers))
    root = Path(tempfile.mkdtemp(prefix="bench-market-"))
    fig: Doc = {
        "config": {
            "nodes": args.nodes,
            "provers": args.provers,
            "slots_per_prover": 1,
            "requesters": args.requesters,
            "model": args.model,
            "max_logrows": args.max_logrows,
            "cpus": os.cpu_count(),
            "cores_in_bound": CORES,
            "loadavg_at_start": os.getloadavg(),
            "quick": args.quick,
            "poll_ms": args.poll_ms,
            "job_poll_s": JOB_POLL_S,
            "advert_interval_s": args.advert_s,
            "slice_deadline_s": args.slice_deadline_s,
            "data_dir_root": str(root),
        }
    }
    net: Net | None = None
    t_all = time.perf_counter()
    seq: list[Doc] = []
    try:
        net = setup(args, root)
        build_cache = args.store / args.model / "cache"
        tasks = sum(
            1
            for s in json.loads((net.bundle / "manifest.json").read_text())["slices"]
            if s.get("proven")
        )
        jobs = args.jobs or max(2, -(-2 * args.provers // tasks))
        fig["config"] |= {"slices_per_job": tasks, "sat_jobs": jobs}
        time.sleep(1.0)
        rss = [read_rss_mb(n.pid) for n in net.nodes]
        fig |= {
            "idle_rss_mb_mean": statistics.mean(rss),
            "idle_rss_mb_max": max(rss),
            "idle_rss_mb": [round(x, 1) for x in rss],
        }
        time.sleep(3.0)  # past the start's burst of adverts and syncs
        tr0, cpu0, t_idle = net.traffic(), net.cpu_ticks(), time.perf_counter()
        time.sleep(args.idle_s)
        tr1, idle_s = net.traffic(), time.perf_counter() - t_idle
        idle_cpu = net.cpu_since(cpu0)
        idle_rate = {k: (tr1.get(k, 0) - tr0.get(k, 0)) / idle_s for k in tr1}
        fig |= {
            "idle_cpu_pct_per_node": 100 * idle_cpu / idle_s / len(net.nodes),
            "idle_traffic_per_s": {k: round(v, 1) for k, v in idle_rate.items()},
        }
        log(f"idle RSS mean {fig['idle_rss_mb_mean']:.0f} MB, max {fig['idle_rss_mb_max']:.0f}")
        t_jobs, w0, n_jobs = time.perf_counter(), net.sampler.snapshot(), 0

        cold = run_sequential(net, args, "cold")
        n_jobs += 1
        seq.append(cold.figures | {"kind": "cold"})
        bare = cold.figures.get("bound_s_without_setup")
        fig |= {
            "latency_ratio_cold": cold.figures["latency_s"] / bare if bare else None,
            "latency_ratio_cold_setup_in_bound": cold.figures.get("latency_ratio"),
            "cold_bound_s_without_setup": bare,
            "cold_setup_s": [s.get("setup_s") for s in cold.figures.get("slices", [])],
            "cold_latency_s": cold.figures.get("latency_s"),
            "cold_bound_s": cold.figures.get("bound_s"),
            "cold_prepare_s": [s.get("prepare_s") for s in cold.figures.get("slices", [])],
        }
        fig["verify"] = measure_verify_cost(net, cold, build_cache, 2)
        if not args.no_prewarm:
            fig["config"]["prewarmed_key_dirs"] = prewarm_keys(net, build_cache)
        fig |= measure_saturation(net, args, jobs)
        n_jobs += jobs
        for _ in range(args.latency_jobs):
            job = run_sequential(net, args, "warm")
            n_jobs += 1
            seq.append(job.figures | {"kind": "warm" if job.figures.get("warm") else "mixed"})
        t_end = time.perf_counter()
        w1, tr2 = net.sampler.snapshot(), net.traffic()
        warm = [j for j in seq if j["kind"] == "warm" and "latency_ratio" in j]
        if not warm:  # none fully warm: report the later jobs, marked so
            warm = [j for j in seq[1:] if "latency_ratio" in j]
            fig["warm_note"] = "no job had only warm provers; later jobs reported instead"
        ann = [x * 1000 for j in seq for x in j.get("announce_s", [])]
        gossip = []
        for j in seq:
            lag = (j.get("breakdown_s") or {}).get("reply_to_announce")
            if lag is not None:
                gossip += [x * 1000 - lag * 1000 for x in j.get("announce_s", [])]
        by_op, counts = diff(w1[0], w0[0]), {k: v - w0[1].get(k, 0) for k, v in w1[1].items()}
        v = fig["verify"]
        v |= {
            "method": "EZKL verify workers under the nodes, sampled every "
            f"{net.sampler.interval_s} s (/proc children, op from the request file), CPU from "
            "the parent's cutime+cstime at reaping; estimate = verify workers counted x CPU of "
            "one verify worker measured in the bench (RUSAGE_CHILDREN). Provers' self-check "
            "verify runs inside their prove worker and is in 'prove', not here",
            "verify_runs_per_job": counts.get("verify", 0) / n_jobs,
            "verify_cpu_s_per_job_estimate": v["verify_one_cpu_s"]
            * counts.get("verify", 0)
            / n_jobs,
            "worker_cpu_s_by_op_per_job": {k: round(x / n_jobs, 2) for k, x in by_op.items()},
            "workers_by_op_per_job": {k: round(x / n_jobs, 2) for k, x in counts.items() if x},
            "verify_runs_per_proof": counts.get("verify", 0) / max(1, proofs_made(net, w0[1])),
            "workers_by_node": net.sampler.counts_by_node(),
        }
        fig |= {
            "verify_cpu_s_per_job": by_op.get("verify", 0.0) / n_jobs,
            "latency_ratio": statistics.median([j["latency_ratio"] for j in warm]),
            "latency_ratio_max": max(j["latency_ratio"] for j in warm),
            "latency_ratio_node": statistics.median([j["latency_ratio_node"] for j in warm]),
            "warm_jobs": len(warm),
            "warm_latency_s": statistics.median([j["latency_s"] for j in warm]),
            "warm_bound_s": statistics.median([j["bound_s"] for j in warm]),
            "announce_p50_ms": pct(ann, 50),
            "announce_p95_ms": pct(ann, 95),
            "announce_gossip_p50_ms": pct(gossip, 50),
            "announce_gossip_p95_ms": pct(gossip, 95),
            "announce_samples": len(ann),
            "announce_method": "POST /jobs reply -> the first GET /jobs poll (every "
            f"{args.poll_ms:g} ms) showing the node's market core decided on the job (bids_sent"
            " or jobs_skipped:* grew); 'gossip alone' starts at the requester's job_announced "
            "log line instead (after the escrow entry)",
            "jobs_total": n_jobs,
            "sequential_jobs": seq,
        }
        traffic = per_job_traffic(tr1, tr2, idle_rate, t_end - t_jobs, n_jobs)
        fig["traffic_per_job"] = traffic
        fig["bytes_per_job"] = (traffic.get("tcp_bytes_sent") or {}).get("per_job_less_idle")
        fig["rss_mb_after"] = [round(read_rss_mb(n.pid), 1) for n in net.nodes]
    except Exception as exc:  # report what was measured before it (a benchmark, not a test)
        log(f"stopped early: {exc!r} (figures after this point are missing)")
        fig["error"] = repr(exc)
        fig.setdefault("sequential_jobs", seq)
    finally:
        if net is not None:
            net.sampler.stop_event.set()
            net.each(lambda n: n.proc.stop())
            net.pool.shutdown()
        own = resource.getrusage(resource.RUSAGE_SELF)
        fig["bench_cpu_s"] = own.ru_utime + own.ru_stime
        fig["loadavg_at_end"] = os.getloadavg()
        fig["wall_s"] = time.perf_counter() - t_all
        if args.keep:
            log(f"data dirs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    fig["goals"] = {k: {"goal": g, "higher_is_better": hi} for k, (g, hi) in GOALS.items()}
    print_table(fig)
    print(json.dumps(fig, indent=2, default=str))
    if args.json:
        args.json.write_text(json.dumps(fig, indent=2, default=str) + "\n")
    sys.exit(1 if "error" in fig else 0)


if __name__ == "__main__":
    main()
