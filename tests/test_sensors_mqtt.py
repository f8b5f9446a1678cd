"""The MQTT source against a real mosquitto broker on a free loopback port."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from sensors.buffer import WindowBuffer
from sensors.mqtt import MqttSource, machine_of
from sensors.payload import PayloadError, decode, encode_binary, encode_json
from sim.fleet import free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


class Broker:
    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.conf = root / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n")
        self.log = root / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=log)
        until(self._listening, f"mosquitto on {self.port}: {self.log.read_text()}")

    def _listening(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


def until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    if not os.path.exists(MOSQUITTO):
        if os.environ.get("CI"):
            pytest.fail("mosquitto is missing: .ci/run installs it")
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


def publisher(port: int) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def publish(client: mqtt.Client, topic: str, payload: bytes) -> None:
    client.publish(topic, payload, qos=1).wait_for_publish(timeout=10)


def test_windows_arrive_from_json_and_binary_payloads_and_garbage_is_counted(
    broker: Broker,
) -> None:
    source = MqttSource("127.0.0.1", broker.port, ["factory/+/vib"], backoff_s=(1, 2))
    buffer, stop = WindowBuffer("mqtt", 1000), threading.Event()
    runner = threading.Thread(target=source.run, args=(buffer, stop))
    runner.start()
    client = publisher(broker.port)
    try:
        until(source.subscribed.is_set, "the broker to acknowledge the subscription")
        samples = np.random.default_rng(1).standard_normal(512).astype(np.float32)
        publish(client, "factory/press-3/vib", encode_json("vibration", 100.0, 4000.0, samples))
        publish(client, "factory/press-3/vib", b"{not json")
        publish(client, "factory/press-3/vib", b"ES\x01\x00 short")
        publish(client, "factory/lathe-1/vib", encode_binary("vibration", 200.0, 4000.0, samples))
        until(lambda: len(buffer) == 4 and source.malformed == 2, "4 windows and 2 rejects")
        blocks = buffer.take(10)
        assert sorted({b.machine for b in blocks}) == ["lathe-1", "press-3"]
        press = next(b for b in blocks if b.machine == "press-3")
        assert np.array_equal(press.windows.reshape(-1), samples)
        assert press.starts_ms.tolist() == [100_000, 100_064]
        assert source.metrics() == {"messages": 4, "malformed": 2, "connects": 1}

        broker.stop()  # the broker goes away; the source reconnects with backoff
        until(lambda: not source.connected.is_set(), "the source to notice")
        broker.start()
        until(lambda: source.connects == 2, "the source to reconnect")
        until(source.subscribed.is_set, "the source to resubscribe")
        client.loop_stop()
        client = publisher(broker.port)
        publish(client, "factory/press-3/vib", encode_binary("vibration", 300.0, 4000.0, samples))
        until(lambda: len(buffer) == 2, "windows after the reconnect")
    finally:
        client.loop_stop()
        stop.set()
        runner.join(10)


def test_payload_formats_round_trip_and_refuse_each_kind_of_damage() -> None:
    samples = np.arange(8, dtype=np.float32) / 4
    for encode in (encode_json, encode_binary):
        reading = decode(encode("temperature", 12.5, 10.0, samples))
        assert (reading.kind, reading.start_s, reading.rate_hz) == ("temperature", 12.5, 10.0)
        assert np.array_equal(reading.samples, samples)
    assert len(encode_binary("vibration", 0.0, 1.0, samples)) == 20 + 4 * 8
    assert decode(b'{"samples": [1, 2.5], "rate": 100}').start_s is None
    good = encode_binary("vibration", 0.0, 1.0, samples)
    damaged = {
        b"": "neither",
        b"[1, 2]": "neither",
        b'{"samples": "x", "rate": 1}': "'samples'",
        b'{"samples": [1, true], "rate": 1}': "'samples'",
        b'{"samples": [1], "rate": 0}': "rate",
        b'{"samples": [], "rate": 1}': "1 to",
        b'{"samples": [1], "rate": 1, "kind": "sound"}': "unknown sensor kind",
        b'{"samples": [1e999], "rate": 1}': "finite",
        good[:-1]: "header says",
        good[:10]: "shorter than its header",
        good[:2] + b"\x02" + good[3:]: "version 2",
        good[:3] + b"\x07" + good[4:]: "kind code 7",
    }
    for payload, reason in damaged.items():
        with pytest.raises(PayloadError, match=reason):
            decode(payload)


def test_machine_names_come_from_the_wildcard_levels() -> None:
    assert machine_of("factory/+/vib", "factory/press-3/vib") == "press-3"
    assert machine_of("site/+/+/temp", "site/a/b/temp") == "a.b"
    assert machine_of("plant/#", "plant/x/y") == "x.y"
    assert machine_of("plant/pump/vib", "plant/pump/vib") == "plant.pump.vib"
