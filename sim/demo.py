"""``edgesync demo``: a small fleet of real daemons, a partition, a heal.

A cloud hub, two regional hubs and four (or more) edge nodes run as separate
processes on loopback, every link mutual TLS through a proxy that can cut it.
Edges write; one regional hub is cut off from the cloud; both sides keep
writing; the link heals and the demo polls every node's digest until all are
equal, then shows what the merge kept and why, checks that every acknowledged
write survived, and stops every daemon with SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where used: the CLI registers the demo's flags on every run
    from sim.fleet import Fleet

ROLE_TEXT = {"cloud": "cloud hub", "regional": "regional hub", "edge": "edge node"}
SHARED = "fleet/"  # what the demo writes; digests cover it (the sensor writes under machines/)
SENSOR = ["--sensors", "sim:vibration:1"]  # e1 scores one simulated machine with TFLite
MACHINE = "machines/e1-vibration-0"


@dataclass
class Expected:
    """What the demo's acknowledged writes must add up to after the heal."""

    anomalies: int = 0
    alerts: set[str] = field(default_factory=set)
    fleet_mode: str = ""

    def check(self, values: dict[str, dict[str, Any]]) -> list[str]:
        problems = []
        if values["fleet/anomalies"] != {"PNCounter": self.anomalies}:
            problems.append(f"fleet/anomalies is {values['fleet/anomalies']}, not {self.anomalies}")
        if values["fleet/alerts"] != {"AWSet": sorted(self.alerts)}:
            problems.append(f"fleet/alerts is {values['fleet/alerts']}, not {sorted(self.alerts)}")
        if values["fleet/mode"] != {"LWWRegister": {"mode": self.fleet_mode}}:
            problems.append(f"fleet/mode is {values['fleet/mode']}")
        return problems


class Narrator:
    """Prints the story, or nothing when the caller wants JSON only."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def __call__(self, text: str = "") -> None:
        if not self.quiet:
            print(text, flush=True)


def short(digest: str) -> str:
    return digest[:8]


def grouped(digests: dict[str, str]) -> str:
    """'cloud r2 e3 e4 = 1a2b3c4d | r1 e1 e2 = 9f8e7d6c': who agrees with whom."""
    groups: dict[str, list[str]] = {}
    for name, digest in digests.items():
        groups.setdefault(digest, []).append(name)
    return "  |  ".join(f"{' '.join(names)} = {short(d)}" for d, names in groups.items())


async def start_fleet(fleet: Fleet, edges: int, say: Narrator) -> dict[str, str]:
    """Start the topology; returns each edge's regional hub."""
    started = time.monotonic()
    from sim.fleet import start_tree

    under = await start_tree(fleet, edges, extra={"e1": SENSOR})
    transport = "mutual TLS, certificates from a fresh CA" if fleet.tls_dir else "plain text"
    say(f"A fleet of {len(fleet.members)} daemons on loopback ({transport}), data in {fleet.root}:")
    for m in fleet.members.values():
        up = f"-> {', '.join(m.upstreams)}" if m.upstreams else ""
        pid = m.process.pid if m.process else "-"
        say(f"    {m.name:<6} {ROLE_TEXT[m.role]:<13} {m.address:<16} pid {pid:<7} {up}")
    say(
        f"  all serving after {time.monotonic() - started:.1f} s. e1 also reads a simulated "
        "vibration sensor (4 kHz) and scores every window with a TFLite model, on the node."
    )
    return under


async def everyone_writes(fleet: Fleet, edges: list[str], want: Expected, say: Narrator) -> None:
    say("\n1. Every edge writes: a shared anomaly counter, a shared alert set, its own config.")
    for i, edge in enumerate(edges, start=1):
        c = fleet.client(edge)
        await c.inc("fleet/anomalies", i)
        await c.add("fleet/alerts", f"{edge}:overheat")
        await c.put(f"fleet/config/{edge}", {"rate_hz": 100 * i})
        want.anomalies += i
        want.alerts.add(f"{edge}:overheat")
        say(f"    {edge}: inc fleet/anomalies {i}; add fleet/alerts {edge}:overheat; "
            f"put fleet/config/{edge} {{\"rate_hz\": {100 * i}}}")  # fmt: skip
    took = await fleet.wait_converged(prefix=SHARED)
    digest = next(iter((await fleet.digests(prefix=SHARED)).values()))
    say(f"  gossip: all {len(fleet.members)} digests equal after {took:.2f} s ({short(digest)}).")
    say(f"  (A digest is a hash of a node's state under {SHARED}: equal digests, equal state.)")


async def both_sides_write(
    fleet: Fleet, under: dict[str, str], want: Expected, say: Narrator
) -> tuple[list[str], list[str]]:
    cut = ["r1", *[e for e, hub in under.items() if hub == "r1"]]
    rest = [n for n in fleet.members if n not in cut]
    a, b = cut[1], rest[-1]  # one edge on each side
    other = rest[-2] if rest[-2].startswith("e") else b
    say("\n2. Partition: the link r1 -> cloud is cut. "
        f"{', '.join(cut)} now reach only each other.")  # fmt: skip
    fleet.link("r1", "cloud").sever()
    say("   Both sides keep writing; each write is acknowledged once durable on its node:")
    ca, cb = fleet.client(a), fleet.client(b)
    await ca.inc("fleet/anomalies", 5)
    await ca.add("fleet/alerts", f"{a}:vibration")
    await ca.rm("fleet/alerts", f"{b}:overheat")
    await ca.put("fleet/mode", {"mode": "eco"})
    say(f"    {a} (cut off):  inc fleet/anomalies 5; add fleet/alerts {a}:vibration; "
        f"rm fleet/alerts {b}:overheat; put fleet/mode {{\"mode\": \"eco\"}}")  # fmt: skip
    await cb.inc("fleet/anomalies", 3)
    await cb.add("fleet/alerts", f"{b}:overheat")
    await fleet.client(other).inc("fleet/anomalies", 4)
    await cb.put("fleet/mode", {"mode": "turbo"})
    say(f"    {b} (cloud side): inc fleet/anomalies 3; add fleet/alerts {b}:overheat (seen again); "
        f"put fleet/mode {{\"mode\": \"turbo\"}}")  # fmt: skip
    say(f"    {other} (cloud side): inc fleet/anomalies 4")
    acked = f"{cut[2]}:overheat"
    await fleet.client("cloud").rm("fleet/alerts", acked)
    say(f"    cloud (operator): rm fleet/alerts {acked} (acknowledges the alert)")
    want.anomalies += 5 + 3 + 4
    want.alerts |= {f"{a}:vibration"}
    want.alerts -= {acked}
    want.fleet_mode = "turbo"
    await fleet.wait_converged(names=cut, prefix=SHARED)
    await fleet.wait_converged(names=rest, prefix=SHARED)
    say("   Each side agrees within itself; the two sides differ:")
    say(f"    {grouped(await fleet.digests(prefix=SHARED))}")
    seen_a = (await ca.get("fleet/anomalies"))["PNCounter"]
    seen_b = (await cb.get("fleet/anomalies"))["PNCounter"]
    say(f"    fleet/anomalies reads {seen_a} on {a} and {seen_b} on {b}.")
    return cut, rest


async def heal(fleet: Fleet, say: Narrator) -> tuple[float, int]:
    say("\n3. Heal: the link r1 -> cloud is restored. Every node's digest, polled:")
    before = fleet.bytes_sent

    def show(elapsed: float, digests: dict[str, str]) -> None:
        distinct = len(set(digests.values()))
        verdict = "all equal" if distinct == 1 else f"{distinct} different"
        say(f"    {elapsed:5.2f} s  {grouped(digests)}   ({verdict})")

    fleet.link("r1", "cloud").restore()
    took = await fleet.wait_converged(on_poll=show, prefix=SHARED)
    sent = fleet.bytes_sent - before
    say(f"  Converged {took:.2f} s after the heal; {sent:,} bytes crossed the links meanwhile "
        f"({fleet.bytes_sent:,} over the whole run, TLS included).")  # fmt: skip
    return took, sent


async def show_merge(
    fleet: Fleet, edges: list[str], want: Expected, say: Narrator
) -> tuple[dict[str, Any], list[str]]:
    keys = ("fleet/anomalies", "fleet/alerts", "fleet/mode")
    at_cloud = {k: await fleet.client("cloud").get(k) for k in keys}
    at_edge = {k: await fleet.client(edges[0]).get(k) for k in keys}
    say(f"\n4. What every replica holds now (read on cloud and on {edges[0]}: "
        f"{'the same' if at_cloud == at_edge else 'DIFFERENT'}):")  # fmt: skip
    say(f"    fleet/anomalies = {at_cloud['fleet/anomalies'].get('PNCounter')}")
    say("        a PN-counter: every increment made on either side counts, once.")
    say(f"    fleet/alerts    = {at_cloud['fleet/alerts'].get('AWSet')}")
    say("        an add-wins set: the cloud side's new sighting of an alert beats the concurrent")
    say("        remove on the cut-off side; the alert the operator removed after seeing it")
    say("        stays removed everywhere.")
    register = json.dumps(at_cloud["fleet/mode"].get("LWWRegister"))
    say(f"    fleet/mode      = {register}")
    say("        a last-writer-wins register: the later write wins (hybrid logical clocks).")
    problems = want.check(at_cloud) + ([] if at_cloud == at_edge else ["cloud and edge differ"])
    if problems:
        for p in problems:
            say(f"  LOST OR WRONG: {p}")
    else:
        say("  Checked against what the demo wrote: no acknowledged write was lost.")
    return at_cloud, problems


async def sensor_reached_cloud(fleet: Fleet, say: Narrator, timeout: float = 20) -> bool:
    """e1's detections (written on e1 while it was cut off, too) are on the cloud."""
    keys = (f"{MACHINE}/anomalies", f"{MACHINE}/alerts")
    deadline = time.monotonic() + timeout
    while True:
        on_edge = [await fleet.client("e1").get(k) for k in keys]
        on_cloud = [await fleet.client("cloud").get(k) for k in keys]
        if (on_edge == on_cloud and on_edge[0]) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.3)
    anomalies = on_cloud[0].get("GCounter", 0)
    alerts = on_cloud[1].get("AWSet", [])
    say(f"    {MACHINE}: {anomalies} anomalous windows, {len(alerts)} open alerts on the cloud,")
    verdict = "the same as on e1" if on_edge == on_cloud else f"but e1 holds {on_edge}"
    say(f"        {verdict}: e1's sensor conclusions crossed the healed partition;")
    say("        its raw readings and features stayed on e1 (local/).")
    return on_edge == on_cloud


async def stop_fleet(fleet: Fleet, say: Narrator) -> dict[str, int]:
    codes = {}
    for name in reversed(list(fleet.members)):
        codes[name] = await fleet.stop(name)
    clean = all(code == 0 for code in codes.values())
    verdict = "exited 0" if clean else f"exit codes {codes}"
    say(f"\n5. Stopped with SIGTERM: each daemon committed, closed its links, {verdict}.")
    return codes


async def run(root: Path, edges: int, tls: bool, say: Narrator) -> dict[str, Any]:
    want = Expected()
    from sim.fleet import Fleet

    async with Fleet(root, tls=tls) as fleet:
        under = await start_fleet(fleet, edges, say)
        names = list(under)
        await everyone_writes(fleet, names, want, say)
        await both_sides_write(fleet, under, want, say)
        took, sent = await heal(fleet, say)
        values, problems = await show_merge(fleet, names, want, say)
        if not await sensor_reached_cloud(fleet, say):
            problems.append("e1's sensor conclusions did not reach the cloud")
        digest = next(iter((await fleet.digests(prefix=SHARED)).values()))
        codes = await stop_fleet(fleet, say)
        total = fleet.bytes_sent
    ok = not problems and all(c == 0 for c in codes.values())
    return {
        "ok": ok, "converged_seconds": round(took, 3), "bytes_during_heal": sent,
        "bytes_total": total, "digest": digest, "values": values, "problems": problems,
        "exit_codes": codes,
    }  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--edges", type=int, default=4, help="edge nodes (at least 4)")
    parser.add_argument("--dir", type=Path, help="keep the fleet's files here (default: a "
                        "temporary directory, removed afterwards)")  # fmt: skip
    parser.add_argument("--insecure", action="store_true", help="plain text instead of mTLS")
    parser.add_argument("--json", action="store_true", help="print only a JSON summary")


def main(args: argparse.Namespace) -> int:
    if args.edges < 4:
        raise SystemExit("edgesync demo: error: --edges must be at least 4")
    say = Narrator(quiet=args.json)
    say("edgesync demo: real daemons on loopback, a partition, a heal.\n")
    root = args.dir or Path(tempfile.mkdtemp(prefix="edgesync-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        summary = asyncio.run(run(root, args.edges, not args.insecure, say))
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    return 0 if summary["ok"] else 1
