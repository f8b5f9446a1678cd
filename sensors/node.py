"""The sensor pipeline inside ``edgesync node``: flags to sources, start and stop.

``--sensors`` takes comma-separated items:

    sim:KIND:N[@RATE]    N simulated machines of KIND (vibration, temperature), RATE Hz
    file:KIND:PATH       replay a recording (.csv or .npy) at real speed, KIND's rate

``--mqtt HOST:PORT`` with one or more ``--mqtt-topic`` subscribes to a broker.
Simulated machines are named ``NODE-KIND-I``; their generator is seeded from
``--sensor-seed`` (default: a hash of the node id), so a node replays the same
signals on every run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import zlib
from pathlib import Path

import numpy as np

from sensors.mqtt import MqttSource
from sensors.pipeline import Pipeline
from sensors.replay import ReplaySource
from sensors.signals import ANOMALY_KINDS, DEFAULT_SPECS
from sensors.simulated import SimulatedSource
from sensors.source import Source
from sensors.state import LoopWriter
from sync.adapters.aio import AsyncReplica


class SensorSpecError(ValueError):
    """A ``--sensors`` or ``--mqtt`` value that cannot work; the message says why."""


def parse_sources(
    node: str,
    items: list[str],
    mqtt: str | None,
    topics: list[str],
    seed: int | None = None,
) -> list[Source]:
    rng = np.random.default_rng(zlib.crc32(node.encode()) if seed is None else seed)
    sources: list[Source] = []
    for item in (part.strip() for entry in items for part in entry.split(",")):
        if item:
            sources.append(_parse_item(node, item, rng))
    if mqtt is not None:
        host, _, port = mqtt.rpartition(":")
        if not host or not port.isdigit():
            raise SensorSpecError(f"--mqtt wants HOST:PORT, not {mqtt!r}")
        if not topics:
            raise SensorSpecError("--mqtt needs at least one --mqtt-topic")
        sources.append(MqttSource(host, int(port), topics, client_id=f"edgesync-{node}"))
    elif topics:
        raise SensorSpecError("--mqtt-topic needs --mqtt HOST:PORT")
    return sources


def _parse_item(node: str, item: str, rng: np.random.Generator) -> Source:
    what, _, rest = item.partition(":")
    kind, _, arg = rest.partition(":")
    if kind not in ANOMALY_KINDS:
        raise SensorSpecError(f"{item!r}: sensor kind is one of {', '.join(ANOMALY_KINDS)}")
    spec = DEFAULT_SPECS[kind]
    if what == "sim":
        count, _, rate = arg.partition("@")
        try:
            n = int(count)
            if rate:
                spec = dataclasses.replace(spec, rate_hz=float(rate))
        except ValueError:
            raise SensorSpecError(f"{item!r}: want sim:KIND:COUNT[@RATE_HZ]") from None
        if n < 1:
            raise SensorSpecError(f"{item!r}: at least one machine")
        return SimulatedSource(node, spec, n, rng.spawn(1)[0])
    if what == "file":
        path = Path(arg)
        return ReplaySource(path, f"{node}-{path.stem}", kind, spec.rate_hz, spec.window,
                            realtime=True)  # fmt: skip
    raise SensorSpecError(f"{item!r}: a sensor is sim:KIND:COUNT or file:KIND:PATH")


async def start_pipeline(replica: AsyncReplica, sources: list[Source]) -> Pipeline:
    """Start ``sources`` feeding ``replica``; inference runs in worker threads."""
    pipeline = Pipeline(LoopWriter(replica, asyncio.get_running_loop()))
    for source in sources:
        pipeline.add(source)
    pipeline.start()
    return pipeline


async def stop_pipeline(pipeline: Pipeline) -> None:
    """Stop sources and inference; the loop keeps serving their last writes meanwhile."""
    await asyncio.to_thread(pipeline.stop)
