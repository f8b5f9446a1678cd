"""An MQTT source: sensor chunks published to a broker, windowed per machine.

Subscribes to ``topics`` (MQTT wildcards allowed) on ``host:port`` with
paho-mqtt. The machine a message belongs to is named by the topic levels its
subscription's wildcards matched, joined with ``.`` (``factory/+/vib`` and
``factory/press-3/vib`` give ``press-3``); a subscription without wildcards
names the machine after the whole topic. Payloads are JSON or the compact
binary format of ``sensors/payload.py``.

paho's network thread connects, and reconnects after any loss, with exponential
backoff between ``backoff_s`` bounds; subscriptions are renewed on every
connect. A malformed payload is counted (``malformed``) and logged, and the
message dropped; nothing else happens to the source.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from sensors.buffer import WindowBuffer
from sensors.payload import PayloadError, decode
from sensors.signals import DEFAULT_SPECS
from sensors.source import Source
from sensors.windowing import Windower

log = logging.getLogger("edgesync.sensors.mqtt")


def machine_of(subscription: str, topic: str) -> str:
    """The topic levels matched by ``subscription``'s wildcards, joined by ``.``."""
    pattern, levels = subscription.split("/"), topic.split("/")
    matched = []
    for i, part in enumerate(pattern):
        if part == "+":
            matched.append(levels[i])
        elif part == "#":
            matched.extend(levels[i:])
            break
    return ".".join(matched) if matched else topic.replace("/", ".")


class MqttSource(Source):
    def __init__(
        self,
        host: str,
        port: int,
        topics: list[str],
        *,
        client_id: str = "",
        backoff_s: tuple[int, int] = (1, 30),
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not topics:
            raise ValueError("an MQTT source needs at least one topic")
        self.name = f"mqtt:{host}:{port}"
        self.host, self.port, self.topics, self.clock = host, port, topics, clock
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.reconnect_delay_set(*backoff_s)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self._windowers: dict[str, Windower] = {}
        self._buffer: WindowBuffer | None = None
        self.connected = threading.Event()
        self.subscribed = threading.Event()  # the broker acknowledged the subscription: live
        self.messages = self.malformed = self.connects = 0

    def run(self, buffer: WindowBuffer, stop: threading.Event) -> None:
        self._buffer = buffer
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()  # paho's thread: connects, retries, reconnects
        try:
            stop.wait()
        finally:
            self.client.disconnect()
            self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:  # fmt: skip
        if reason.is_failure:
            log.warning("mqtt connect refused", extra={"broker": self.name, "reason": str(reason)})
            return
        self.connects += 1
        client.subscribe([(topic, 0) for topic in self.topics])
        log.info("mqtt connected", extra={"broker": self.name, "topics": ",".join(self.topics)})
        self.connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:  # fmt: skip
        self.connected.clear()
        self.subscribed.clear()
        log.info("mqtt disconnected", extra={"broker": self.name, "reason": str(reason)})

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any,
                      properties: Any) -> None:  # fmt: skip
        if any(reason.is_failure for reason in reasons):
            log.warning("mqtt subscription refused", extra={"broker": self.name})
            return
        self.subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.messages += 1
        try:
            reading = decode(bytes(message.payload))
        except PayloadError as exc:
            self.malformed += 1
            extra = {"topic": message.topic, "reason": str(exc), "malformed": self.malformed}
            log.warning("malformed payload dropped", extra=extra)
            return
        machine = self._machine(message.topic)
        windower = self._windowers.get(machine)
        if windower is None or (windower.kind, windower.rate_hz) != (reading.kind, reading.rate_hz):
            spec = DEFAULT_SPECS[reading.kind]
            windower = Windower(machine, reading.kind, spec.window, reading.rate_hz)
            self._windowers[machine] = windower
        start = reading.start_s
        if start is None:
            start = self.clock() - reading.samples.size / reading.rate_hz
        block = windower.push(reading.samples, start)
        if block is not None and self._buffer is not None:
            self._buffer.put(block)

    def _machine(self, topic: str) -> str:
        for subscription in self.topics:
            if mqtt.topic_matches_sub(subscription, topic):
                return machine_of(subscription, topic)
        return topic.replace("/", ".")

    def metrics(self) -> dict[str, int]:
        return {"messages": self.messages, "malformed": self.malformed, "connects": self.connects}
