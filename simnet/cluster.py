"""`dsperse-node simnet`: dozens of real node processes on loopback, real proofs, faults, a report.

Phases (each with a timeout; a failed check is reported, never hidden):
1. init      one data dir per node (identity key + config) under the work dir;
2. start     node 0, then every other node bootstrapping from it (real py-libp2p, Noise, gossipsub);
3. mesh      every node has heard a signed capacity advert from every other node;
4. faults    seeded crash faults: a node is SIGKILLed, restarted on the same data dir, and must come
             back with the same peer id and be heard by everyone again;
5. ledger    seeded wallet operations through the nodes' control APIs (the supervisor wrote the
             genesis and never touches a replica file); a node SIGKILLed right after an
             acknowledged write restarts with it; one node turns byzantine and forks its own
             chain; every replica, read back through its node, must reach one state root with
             supply conserved, the fork slashed once, no honest node slashed and no
             acknowledged entry lost;
6. report    nodes stopped with SIGTERM (clean exit expected), figures printed and written as JSON.
7. jobs      meanwhile the model owner slices a shipped model with the `slice` command; jobs are
             submitted at the requester node and the market proves them: other nodes bid, are
             awarded, fetch the bundle and SRS, prove with real EZKL; the requester checks every
             proof and the chain's linkage; every replica settles the payments. The supervisor
             proves nothing. The live dashboard is node.dashboard.
"""

from __future__ import annotations

import json
import random
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live

from node.dashboard import LedgerRow, NodeRow, SliceRow, Snapshot, render
from simnet.procs import NodeProcess, init_data_dir

POLL_S = 0.5
EVENTS_MAX = 200


@dataclass(frozen=True)
class SimnetOptions:
    nodes: int = 6
    seed: int = 1
    workdir: Path = Path("out/simnet")
    model: str = "digits"
    max_logrows: int = 15
    kills: int = 1
    advert_interval_s: float = 1.0
    start_timeout_s: float = 60.0
    mesh_timeout_s: float = 120.0
    prove: bool = True
    prove_timeout_s: float = 1800.0
    ledger_entries: int = 200
    jobs: int = 2
    dashboard: bool = True
    keep: bool = False  # keep node data dirs from an earlier run (same identities)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class SimnetReport:
    seed: int
    nodes: int
    checks: list[Check] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    proving: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "seed": self.seed,
            "nodes": self.nodes,
            "checks": [asdict(c) for c in self.checks],
            "figures": self.figures,
            "proving": self.proving,
        }


class Simnet:
    """Supervises the node processes, the workloads and the dashboard."""

    def __init__(self, options: SimnetOptions, console: Console | None = None) -> None:
        self.o = options
        self.rng = random.Random(options.seed)
        self.console = console or Console()
        self.started = time.monotonic()
        self.phase = "init"
        self.events: deque[str] = deque(maxlen=EVENTS_MAX)
        self.nodes: list[NodeProcess] = []
        self.slices: dict[int, SliceRow] = {}
        self.ledger_rows: list[LedgerRow] = []
        self.report = SimnetReport(seed=options.seed, nodes=options.nodes)
        self._status: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._live: Live | None = None
        self._bundle: tuple[Path, bool, str] = (Path(), False, "not built")
        self._proving_done = threading.Event()
        self._interrupt = threading.Event()  # never set: only paces the status polls

    # -- plumbing -----------------------------------------------------------------------------

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def event(self, text: str) -> None:
        with self._lock:
            self.events.append(f"{self.elapsed():7.1f}s  {text}")
        if self._live is None and not self.o.dashboard:
            self.console.print(f"[dim]{self.elapsed():7.1f}s[/dim]  {text}")

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.report.checks.append(Check(name, ok, detail))
        self.event(f"check {name}: {'ok' if ok else 'FAILED'} {detail}".rstrip())
        return ok

    def on_slice(self, index: int, state: str, figures: dict[str, Any]) -> None:
        with self._lock:
            old = self.slices.get(index, SliceRow(index, state))
            self.slices[index] = SliceRow(
                index=index,
                state=state,
                logrows=int(figures.get("logrows") or old.logrows),
                rows=int(figures.get("rows") or old.rows),
                prover="supervisor" if state in ("proving", "verified", "failed") else "",
                prove_s=float(figures.get("prove_s") or old.prove_s),
                peak_rss_mb=float(figures.get("peak_rss_mb") or old.peak_rss_mb),
                proof_bytes=int(figures.get("proof_bytes") or old.proof_bytes),
                note=str(figures.get("note") or old.note)[:40],
            )
        if state in ("verified", "failed"):
            self.event(f"slice {index} {state}")

    def snapshot(self) -> Snapshot:
        rows = []
        for n in self.nodes:
            st = self._status.get(n.name, {})
            transport = st.get("transport", {})
            msgs_in = transport.get("messages_in", {})
            rows.append(
                NodeRow(
                    name=n.name,
                    peer_id=n.peer_id,
                    state=n.state,
                    peers=int(transport.get("peers_count", 0)),
                    adverts_seen=len(st.get("providers", {})),
                    msgs_in=sum(sum(v.values()) for v in msgs_in.values()),
                    msgs_out=sum(transport.get("messages_out", {}).values()),
                    rejected=sum(v.get("reject", 0) for v in msgs_in.values()),
                    rss_mb=n.rss_mb(),
                    restarts=n.restarts,
                )
            )
        with self._lock:
            slices = tuple(self.slices[i] for i in sorted(self.slices))
            events = tuple(self.events)
        figures = tuple((k, str(v)) for k, v in self.report.figures.items())
        return Snapshot(
            title="dsperse simnet",
            phase=self.phase,
            elapsed_s=self.elapsed(),
            seed=self.o.seed,
            nodes=tuple(rows),
            slices=slices,
            ledger=tuple(self.ledger_rows),
            events=events,
            figures=figures,
        )

    def refresh(self) -> None:
        for n in self.nodes:
            st = n.status()
            if st is not None:
                self._status[n.name] = st
            elif n.name in self._status and not n.is_running():
                del self._status[n.name]
        if self._live is not None:
            self._live.update(render(self.snapshot()), refresh=True)

    def wait_until(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        """Poll node statuses (and redraw) until `condition()` holds or the timeout passes."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.refresh()
            if condition():
                return True
            if time.monotonic() >= deadline:
                return False
            self._interrupt.wait(POLL_S)  # a bounded pause between polls, not a sync point

    def heard(self, listener: NodeProcess, speaker: NodeProcess, since_ms: int = 0) -> bool:
        providers = self._status.get(listener.name, {}).get("providers", {})
        seen = providers.get(speaker.peer_id)
        return seen is not None and int(seen.get("seen_ms", 0)) >= since_ms

    def everyone_hears(self, speakers: list[NodeProcess], since_ms: int = 0) -> bool:
        return all(
            self.heard(listener, speaker, since_ms)
            for listener in self.nodes
            for speaker in speakers
            if listener is not speaker
        )

    # -- phases -------------------------------------------------------------------------------

    def phase_init(self) -> None:
        self.phase = "init"
        if self.o.workdir.exists() and not self.o.keep:
            for old in self.o.workdir.glob("node-*"):
                shutil.rmtree(old)
        self.o.workdir.mkdir(parents=True, exist_ok=True)
        identities = []
        for i in range(self.o.nodes):
            data_dir = self.o.workdir / f"node-{i:02d}"
            identity = init_data_dir(data_dir)
            node = NodeProcess(f"n{i:02d}", data_dir, self.o.advert_interval_s)
            node.peer_id = identity.peer_id
            self.nodes.append(node)
            identities.append(identity)
        from simnet.ledger_workload import write_network_genesis

        genesis = write_network_genesis(
            identities, [n.data_dir for n in self.nodes], self.o.workdir / "genesis.json"
        )
        self.report.figures["network_id"] = genesis.network_id_hex[:16]
        self.event(f"initialised {self.o.nodes} data dirs under {self.o.workdir}; genesis written")

    def phase_start(self) -> bool:
        self.phase = "start"
        t0 = time.monotonic()
        first = self.nodes[0]
        first.start([])
        if not self.check("bootstrap_node_up", first.wait_ready(self.o.start_timeout_s)):
            return False
        bootstrap = [first.bootstrap_addr()]
        self.event(f"{first.name} listening on {bootstrap[0]}")
        for node in self.nodes[1:]:
            node.start(bootstrap)
        up = [node.wait_ready(self.o.start_timeout_s) for node in self.nodes[1:]]
        self.report.figures["start_all_s"] = round(time.monotonic() - t0, 2)
        down = [n.name for n, ok in zip(self.nodes[1:], up, strict=True) if not ok]
        return self.check("all_nodes_up", not down, f"down: {down}" if down else "")

    def phase_mesh(self) -> bool:
        self.phase = "mesh"
        t0 = time.monotonic()
        ok = self.wait_until(lambda: self.everyone_hears(self.nodes), self.o.mesh_timeout_s)
        self.report.figures["mesh_all_adverts_s"] = round(time.monotonic() - t0, 2)
        pairs = sum(self.heard(a, b) for a in self.nodes for b in self.nodes if a is not b)
        total = self.o.nodes * (self.o.nodes - 1)
        ok = self.check("every_node_hears_every_advert", ok, f"{pairs}/{total} pairs")
        # Discovery must turn the bootstrap star into a mesh: no node hangs on one link.
        want = min(2, self.o.nodes - 1)
        meshed = self.wait_until(lambda: self.degree_min() >= want, self.o.mesh_timeout_s)
        self.report.figures["peers_min"] = self.degree_min()
        self.report.figures["peers_max"] = self.degree_max()
        return self.check("mesh_not_a_star", meshed, f"min degree {self.degree_min()}") and ok

    def degrees(self) -> list[int]:
        return [
            int(self._status.get(n.name, {}).get("transport", {}).get("peers_count", 0))
            for n in self.nodes
        ]

    def degree_min(self) -> int:
        return min(self.degrees(), default=0)

    def degree_max(self) -> int:
        return max(self.degrees(), default=0)

    def phase_faults(self) -> bool:
        self.phase = "faults"
        ok = True
        for k in range(self.o.kills):
            victim = self.rng.choice(self.nodes[1:]) if self.o.nodes > 1 else self.nodes[0]
            peer_before = victim.peer_id
            victim.kill()
            self.event(f"fault {k}: SIGKILL {victim.name} ({peer_before[-8:]})")
            self.refresh()
            killed_ms = int(time.time() * 1000)
            t0 = time.monotonic()
            victim.restarts += 1
            victim.state = "restarting"
            victim.start([self.nodes[0].bootstrap_addr()] if victim is not self.nodes[0] else [])
            up = victim.wait_ready(self.o.start_timeout_s)
            same = victim.peer_id == peer_before
            ok &= self.check(f"restart_{k}_same_peer_id", up and same, victim.peer_id[-8:])
            back = up and self.wait_until(
                _hears_again(self, victim, killed_ms), self.o.mesh_timeout_s
            )
            self.report.figures[f"rejoin_{k}_s"] = round(time.monotonic() - t0, 2)
            ok &= self.check(f"restart_{k}_heard_by_all", back)
        return ok

    def phase_ledger(self) -> bool:
        self.phase = "ledger"
        from simnet import ledger_workload as lw

        result = lw.LedgerWorkloadResult()
        rng = random.Random(self.rng.randrange(2**32))
        writable = self.wait_until(
            lambda: all((n.ledger() or {}).get("writable") for n in self.nodes),
            self.o.mesh_timeout_s,
        )
        if not self.check("ledger_replicas_writable", writable):
            return False
        t0 = time.monotonic()
        half = self.o.ledger_entries // 2
        lw.play(self.nodes, rng, half, result)
        result.kill_ok = self._kill_after_ack(rng, result)
        cheat = self.nodes[-1]
        self._turn_byzantine(cheat, result)
        lw.play(self.nodes, rng, self.o.ledger_entries - half, result)
        self.report.figures["ledger_writes_ok"] = result.writes_ok
        self.report.figures["ledger_writes_refused"] = result.writes_refused
        self.report.figures["ledger_write_s"] = round(time.monotonic() - t0, 2)
        result.converge_s = lw.wait_converged(self.nodes, 60.0, self._pause)
        lw.read_outcome(self.nodes, cheat, result)
        result.entries_lost = lw.count_lost(self.nodes, result.acknowledged)
        self._ledger_rows()
        converged = result.converge_s is not None
        if converged:
            self.report.figures["ledger_converge_s"] = round(result.converge_s or 0.0, 2)
        distinct = len(set(result.roots.values()))
        ok = self.check("ledger_roots_agree", converged, f"{distinct} distinct root(s)")
        ok &= self.check("ledger_supply_conserved", result.conserved)
        ok &= self.check(
            "ledger_fork_slashed_once",
            result.cheat_slashed and result.offences == 1,
            f"{result.offences} offence(s)",
        )
        ok &= self.check("ledger_honest_never_slashed", result.honest_slashed == 0)
        ok &= self.check("ledger_killed_node_kept_its_entry", result.kill_ok)
        lost = result.entries_lost
        return self.check(
            "ledger_acknowledged_entries_lost_0", lost == 0,
            f"{lost} of {len(result.acknowledged)} lost",
        ) and ok  # fmt: skip

    def _pause(self, seconds: float) -> None:
        self._interrupt.wait(seconds)  # never set: paces the polls
        self.refresh()

    def _kill_after_ack(self, rng: random.Random, result: Any) -> bool:
        """SIGKILL a node right after it acknowledged a write; it must come back holding it."""
        from simnet.ledger_workload import _write

        victim = rng.choice(self.nodes[1:-1]) if self.o.nodes > 2 else self.nodes[0]
        payee = self.nodes[0] if victim is not self.nodes[0] else self.nodes[-1]
        h = _write(victim, "/wallet/transfer", {"to": payee.peer_id, "amount": 1}, result)
        victim.kill()
        self.event(f"ledger: SIGKILL {victim.name} right after it acknowledged {h[:12]}")
        victim.restarts += 1
        victim.start([self.nodes[0].bootstrap_addr()] if victim is not self.nodes[0] else [])
        if not h or not victim.wait_ready(self.o.start_timeout_s):
            return False
        status, doc = victim.call("POST", "/ledger/has", {"hashes": [h]})
        return status == 200 and not doc["missing"]

    def _turn_byzantine(self, cheat: NodeProcess, result: Any) -> None:
        """Restart the last node with the fork-own-chain fault and make it write once."""
        from simnet.ledger_workload import _write

        cheat.stop()
        cheat.extra_args = ["--fault", "fork-own-chain"]
        cheat.start([self.nodes[0].bootstrap_addr()])
        self.event(f"ledger: {cheat.name} turns byzantine (signs two entries at one seq)")
        if cheat.wait_ready(self.o.start_timeout_s):
            self.wait_until(lambda: bool((cheat.ledger() or {}).get("writable")), 30.0)
            body = {"to": self.nodes[0].peer_id, "amount": 3}
            if _write(cheat, "/wallet/transfer", body, result):
                # A forked entry may lose the fork: that is the cheat's loss, not an honest one.
                result.acknowledged.pop()

    def _ledger_rows(self) -> None:
        rows = []
        for n in self.nodes:
            doc = n.ledger() or {}
            root, entries = str(doc.get("state_root", "")), int(doc.get("entries", 0))
            rows.append(LedgerRow(n.name, root, entries, supply_ok=bool(doc.get("conserved"))))
        self.ledger_rows = rows

    def start_bundle(self) -> threading.Thread:
        """The model owner slices the model (the `slice` command) while the nodes start, into
        the requester node's cache, so that node serves the bundle's SRS to provers."""
        from node.proof_verifier import get_data_cache_dir
        from simnet import market_workload as mw

        requester = self.nodes[0]
        out = self.o.workdir / f"bundle-{self.o.model}-l{self.o.max_logrows}"

        def work() -> None:
            try:
                cache = get_data_cache_dir(requester.data_dir)
                self._bundle = (out, *mw.build_bundle(self.o.model, out, cache, self.o.max_logrows))
            finally:
                self._proving_done.set()

        thread = threading.Thread(target=work, name="bundle", daemon=True)
        thread.start()
        self.event(f"model owner slicing {self.o.model} (max logrows {self.o.max_logrows})")
        return thread

    def phase_jobs(self) -> bool:
        """Jobs submitted at the requester node; the network proves them (the market)."""
        from simnet import market_workload as mw

        self.phase = "jobs"
        built = self.wait_until(self._proving_done.is_set, self.o.prove_timeout_s)
        if not self.check("bundle_built", built and self._bundle[1], str(self._bundle[2:])):
            return False
        requester, t0 = self.nodes[0], time.monotonic()
        jobs = []
        for k in range(self.o.jobs):
            out = self.o.workdir / f"result-{k}"
            got = mw.submit(requester, self._bundle[0], self.o.model, out, self.o.prove_timeout_s)
            if isinstance(got, str):
                return self.check("jobs_submitted", False, got)
            jobs.append((requester, got))
            self.event(f"job {got.job_id[:12]} submitted at {requester.name}")
        mw.follow(jobs, self.o.prove_timeout_s, self._pause, self._on_job_doc)
        outcomes = [job for _, job in jobs]
        self.report.proving = {"jobs": [asdict(j) for j in outcomes]}
        done = [j for j in outcomes if j.state == "done"]
        lat = sorted(j.latency_s for j in done)
        self.report.figures["jobs_completed"] = f"{len(done)}/{len(outcomes)}"
        if lat:
            self.report.figures["job_latency_s_p50"] = round(lat[len(lat) // 2], 1)
            self.report.figures["job_latency_s_max"] = round(lat[-1], 1)
        self.report.figures["jobs_wall_s"] = round(time.monotonic() - t0, 1)
        self.report.figures["paid_total"] = sum(j.paid for j in outcomes)
        self.report.figures["re_awards"] = sum(j.rounds_max for j in outcomes)
        reasons = "; ".join(f"{j.job_id[:8]}: {j.reason}" for j in outcomes if j.state != "done")
        ok = self.check("jobs_completed", len(done) == len(outcomes), reasons)
        ok &= self.check("chains_verified", all(j.chain == "ok" for j in done))
        others = all(requester.peer_id not in j.provers and "" not in j.provers for j in done)
        ok &= self.check("slices_proven_by_other_nodes", others and bool(done))
        from simnet.ledger_workload import wait_converged

        converge = wait_converged(self.nodes, 120.0, self._pause)
        return self.check("roots_agree_after_jobs", converge is not None) and ok

    def _on_job_doc(self, job: Any, doc: dict[str, Any]) -> None:
        with self._lock:
            for s in doc.get("slices", []):
                prover = s.get("prover", "")
                self.slices[int(s["index"])] = SliceRow(
                    int(s["index"]), s["state"], prover=prover[-8:] if prover else "",
                    note=f"job {doc['job_id'][:8]} round {s.get('round', 0)}",
                )  # fmt: skip
        self.refresh()

    def phase_stop(self) -> bool:
        self.phase = "stop"
        codes = {n.name: n.stop() for n in self.nodes}
        bad = {k: v for k, v in codes.items() if v != 0}
        return self.check("clean_shutdown", not bad, f"exit codes {bad}" if bad else "")

    # -- the run ------------------------------------------------------------------------------

    def run(self) -> SimnetReport:
        live = Live(console=self.console, auto_refresh=False) if self.o.dashboard else None
        try:
            if live is not None:
                live.start()
                self._live = live
            self.phase_init()
            proving = self.start_bundle() if self.o.prove else None
            if self.phase_start() and self.phase_mesh():
                self.phase_faults()
            self.phase_ledger()
            if proving is not None:
                self.phase_jobs()
            self.phase = "report"
            self.refresh()
        finally:
            self.phase_stop()
            self.refresh()
            if live is not None:
                live.stop()
                self._live = None
            for n in self.nodes:
                if n.is_running():
                    n.kill()
        return self.report


def _hears_again(sim: Simnet, victim: NodeProcess, since_ms: int) -> Callable[[], bool]:
    return lambda: sim.everyone_hears([victim], since_ms)


def print_report(report: SimnetReport, console: Console) -> None:
    from rich.table import Table

    table = Table(title=f"simnet report (seed {report.seed}, {report.nodes} nodes)")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail")
    for c in report.checks:
        table.add_row(c.name, "[green]ok[/]" if c.ok else "[red]FAILED[/]", c.detail)
    console.print(table)
    figures = Table(title="figures", show_header=False)
    figures.add_column("figure")
    figures.add_column("value", justify="right")
    for k, v in report.figures.items():
        figures.add_row(k, str(v))
    console.print(figures)
    verdict = "[green]PASSED[/]" if report.ok else "[red]FAILED[/]"
    console.print(f"simnet {verdict} seed={report.seed}")


def write_report(report: SimnetReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_json(), indent=2, default=str))
