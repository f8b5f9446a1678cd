"""Sensors: signals, windows, features, the shipped TFLite models, detection quality,
back-pressure, and inference results turned into replicated state."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import cast

import numpy as np
import pytest

from sensors.buffer import WindowBuffer
from sensors.calibration import Calibration
from sensors.evaluate import BAR, evaluate
from sensors.features import FeatureExtractor, fast_log, features, width
from sensors.model import AnomalyModel, ModelCard, ModelError
from sensors.pipeline import Pipeline
from sensors.replay import RecordingError, ReplaySource, load_recording
from sensors.signals import ANOMALY_KINDS, DEFAULT_SPECS, LABELS, labelled_windows
from sensors.simulated import SimulatedSource
from sensors.state import (
    Add,
    Assign,
    EmbeddedWriter,
    Increment,
    MachineTracker,
    Raise,
    Scored,
    Update,
    alert_name,
    coalesce,
    local_key,
    machine_key,
)
from sensors.windowing import Block, Windower
from sync import AWSet, GCounter, HybridLogicalClock, LWWRegister, MaxRegister
from sync.adapters.embedded import open_replica

VIBRATION = DEFAULT_SPECS["vibration"]


# ---- models ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(ANOMALY_KINDS))
def test_shipped_model_loads_and_scores_healthy_low_and_stuck_high(kind: str) -> None:
    model = AnomalyModel.for_kind(kind, batch=64)
    spec = DEFAULT_SPECS[kind]
    assert model.width == width(spec.bands)
    data = labelled_windows(spec, np.random.default_rng(1), 300, 100)
    scores = model.score(
        features(data.windows, spec.bands)
    )  # 300 + 100 per kind: partial last batch
    assert scores.shape == (data.labels.size,) and np.isfinite(scores).all()
    healthy, stuck = scores[data.labels == 0], scores[data.labels == LABELS.index("stuck")]
    assert np.median(healthy) < model.card.threshold < stuck.min()
    # a padded partial batch scores exactly as the same rows inside a full batch
    rows = features(data.windows[:64], spec.bands)
    assert np.allclose(model.score(rows[:10]), model.score(rows)[:10], rtol=1e-5)


def test_a_card_that_does_not_match_its_model_is_refused(tmp_path: Path) -> None:
    card = ModelCard.load("vibration")
    (tmp_path / "vibration.json").write_text(card.path.with_suffix(".json").read_text())
    (tmp_path / "vibration.tflite").write_bytes(card.path.read_bytes()[:-1] + b"\0")
    with pytest.raises(ModelError, match="does not match its card"):
        ModelCard.load("vibration", tmp_path)
    with pytest.raises(ModelError, match="cannot load"):
        ModelCard.load("temperature", tmp_path)


@pytest.mark.parametrize("kind", sorted(ANOMALY_KINDS))
def test_detection_quality_meets_the_bar_on_held_out_data(kind: str) -> None:
    model = AnomalyModel.for_kind(kind)
    report = evaluate(model, seed=4242, per_kind=500)
    for anomaly, quality in report["quality"].items():
        assert quality["precision"] >= BAR, (anomaly, quality)
        assert quality["recall"] >= BAR, (anomaly, quality)
    assert set(report["quality"]) == {*ANOMALY_KINDS[kind], "all"}


def test_the_card_records_the_metrics_the_evaluate_command_measures() -> None:
    card = ModelCard.load("vibration")
    measured = card.raw["measured"]
    report = evaluate(AnomalyModel.for_kind("vibration"), seed=measured["seed"])
    for anomaly, quality in report["quality"].items():
        assert measured[anomaly]["precision"] == quality["precision"]
        assert measured[anomaly]["recall"] == quality["recall"]


# ---- signals, windows, features ---------------------------------------------------------------


def test_a_seed_replays_the_simulated_stream_exactly() -> None:
    def run() -> list[Block]:
        source = SimulatedSource("n", VIBRATION, 2, np.random.default_rng(9), realtime=False,
                                 anomaly_rate=0.2, clock=lambda: 1000.0)  # fmt: skip
        return source.step(50) + source.step(50)

    first, second = run(), run()
    assert [b.machine for b in first] == ["n-vibration-0", "n-vibration-1"] * 2
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(a.windows, b.windows) and np.array_equal(a.starts_ms, b.starts_ms)
    assert first[2].starts_ms[0] == 1000_000 + 50 * 64  # consecutive windows, 64 ms each


def test_windows_do_not_depend_on_how_the_stream_was_chunked() -> None:
    samples = np.random.default_rng(2).standard_normal(10_000).astype(np.float32)
    whole = Windower("m", "vibration", 256, 4000.0).push(samples, 100.0)
    cut = Windower("m", "vibration", 256, 4000.0)
    pieces = [cut.push(samples[a:b], 100.0 + a / 4000) for a, b in
              zip([0, 7, 300, 4000, 9999], [7, 300, 4000, 9999, 10_000], strict=True)]  # fmt: skip
    blocks = [p for p in pieces if p is not None]
    assert whole is not None and len(whole) == 10_000 // 256
    assert np.array_equal(np.concatenate([b.windows for b in blocks]), whole.windows)
    assert np.array_equal(np.concatenate([b.starts_ms for b in blocks]), whole.starts_ms)
    assert whole.starts_ms[1] - whole.starts_ms[0] == 64


def test_batched_features_equal_one_window_at_a_time() -> None:
    data = labelled_windows(VIBRATION, np.random.default_rng(3), 20, 5)
    batch = features(data.windows)
    one_by_one = np.vstack([features(w[None, :]) for w in data.windows])
    assert np.allclose(batch, one_by_one, rtol=1e-4, atol=1e-4)
    extractor = FeatureExtractor(256, 64)
    assert np.allclose(extractor.compute(data.windows), batch)
    with pytest.raises(ValueError):
        extractor.compute(np.zeros((65, 256), np.float32))
    with pytest.raises(ValueError):
        features(np.zeros((2, 30), np.float32))


def test_a_tone_puts_its_power_in_its_band_and_a_frozen_window_has_none() -> None:
    w, rate, bands = VIBRATION.window, VIBRATION.rate_hz, VIBRATION.bands
    t = np.arange(w) / rate
    probe_hz = [(2 * b + 1.5) * rate / w for b in (0, 9, 40, 63)]  # a band's probe, its centre
    tones = np.stack([np.sin(2 * np.pi * f * t + f) for f in probe_hz])
    frozen = np.full((1, w), 3.25)
    rows = features(np.vstack([tones, frozen]).astype(np.float32), bands)
    assert rows[:4, :bands].argmax(axis=1).tolist() == [0, 9, 40, 63]
    assert (rows[:4, :bands].max(axis=1) - np.median(rows[:4, :bands], axis=1) > 8).all()
    floor = np.full(bands, 1e-6, np.float32)
    fast_log(floor, floor)
    assert np.array_equal(rows[4, :bands], floor)
    assert rows[4, -1] == 1.0 and rows[4, bands] == np.float32(3.25)  # repeats, mean


def test_an_offset_moves_the_mean_and_nothing_else() -> None:
    # the centring rides in the cosine product: a large offset (a temperature)
    # must still cancel out of the spectrum, the spread and the differences
    data = labelled_windows(VIBRATION, np.random.default_rng(5), 64, 0).windows
    base, shifted = features(data), features(data + np.float32(60.0))
    assert np.allclose(shifted[:, VIBRATION.bands], base[:, VIBRATION.bands] + 60, atol=1e-3)
    others = np.r_[0 : VIBRATION.bands, VIBRATION.bands + 1 : base.shape[1]]
    assert np.allclose(shifted[:, others], base[:, others], rtol=0, atol=0.01)


def test_fast_log_is_within_006_of_the_log_and_exact_at_powers_of_two() -> None:
    x = np.geomspace(1e-7, 1e7, 100_001).astype(np.float32)
    approx = np.empty_like(x)
    fast_log(x.copy(), approx)
    assert np.abs(approx - np.log(x)).max() < 0.061
    assert (np.diff(approx) >= 0).all()  # monotone: a larger power never reads smaller
    powers = np.float32(2.0) ** np.arange(-20, 21, dtype=np.float32)
    exact = np.empty_like(powers)
    fast_log(powers.copy(), exact)
    assert np.allclose(exact, np.log(powers), rtol=0, atol=1e-5)


# ---- back-pressure -------------------------------------------------------------------------


def test_a_full_buffer_drops_the_oldest_windows_and_counts_them() -> None:
    buffer = WindowBuffer("b", capacity=10)
    for start in range(0, 40, 4):  # 10 blocks of 4 windows, starts 0..39
        starts = np.arange(start, start + 4, dtype=np.int64)
        buffer.put(Block("m", "vibration", np.zeros((4, 8), np.float32), starts))
    assert (len(buffer), buffer.accepted, buffer.dropped) == (10, 40, 30)
    taken = buffer.take(100)
    assert np.concatenate([b.starts_ms for b in taken]).tolist() == list(range(30, 40))
    buffer.put(Block("m", "vibration", np.zeros((25, 8), np.float32), np.arange(25)))
    assert (len(buffer), buffer.dropped) == (10, 45)


class _Flood(SimulatedSource):
    """A simulated machine as fast as numpy renders it: far faster than inference."""

    def run(self, buffer: WindowBuffer, stop: threading.Event) -> None:
        while not stop.is_set():
            for block in self.step(self.burst):
                buffer.put(block)


def test_a_source_faster_than_inference_loses_its_oldest_windows_and_the_node_keeps_up(
    tmp_path: Path,
) -> None:
    with open_replica(tmp_path / "r", "edge") as replica:
        pipeline = Pipeline(EmbeddedWriter(replica), batch=64, capacity=128, summary_every_s=0)
        flood = _Flood("n", VIBRATION, 1, np.random.default_rng(5), realtime=False, burst=512,
                       anomaly_rate=0.05, clock=lambda: 0.0)  # fmt: skip
        buffer = pipeline.add(flood)
        pipeline.start()
        while pipeline.windows_scored < 2_000 or buffer.dropped == 0:
            threading.Event().wait(0.05)
        pipeline.stop()
        assert not any(t.is_alive() for t in threading.enumerate() if t.name == "inference")
        assert buffer.dropped > 0
        scored, machine = pipeline.windows_scored, "n-vibration-0"
        assert buffer.accepted == scored + buffer.dropped + len(buffer)
        summary = replica.value(machine_key(machine, "summary"))
        assert summary["windows"] == scored  # every scored window was accounted for
        metrics = replica.value(local_key("metrics"))
        assert metrics["dropped"] > 0 and metrics[flood.name]["dropped"] > 0
        counted = replica.value(machine_key(machine, "anomalies"))
        assert counted == summary["anomalous"] > 0


# ---- into replicated state ---------------------------------------------------------------------


def test_inference_results_land_under_the_documented_keys(tmp_path: Path) -> None:
    with open_replica(tmp_path / "r", "edge") as replica:
        pipeline = Pipeline(EmbeddedWriter(replica), batch=128, summary_every_s=0)
        source = SimulatedSource("n", VIBRATION, 1, np.random.default_rng(11), realtime=False,
                                 anomaly_rate=0.05, clock=lambda: 1_700_000_000.0)  # fmt: skip
        pipeline.add(source)
        blocks = source.step(400)
        for block in blocks:
            pipeline.sources[0][1].put(block)
        while pipeline.step():
            pass
        machine = "n-vibration-0"
        counted = replica.value(machine_key(machine, "anomalies"))
        assert 0.9 * source.truth.anomalous <= counted <= 1.1 * source.truth.anomalous + 2
        alerts = replica.get(machine_key(machine, "alerts"), AWSet)
        assert (
            alerts is not None
            and 0 < len(alerts.value()) <= sum(source.truth.episodes.values()) + 2
        )
        assert all(
            str(a).startswith("2023-11-14T22:") and str(a).endswith("Z") for a in alerts.value()
        )
        peak = replica.get(machine_key(machine, "peak"), MaxRegister)
        assert peak is not None and peak.value() == pytest.approx(
            np.abs(blocks[0].windows).max(), rel=1e-5
        )
        assert replica.get(machine_key(machine, "anomalies"), GCounter) is not None
        summary = replica.get(machine_key(machine, "summary"), LWWRegister)
        assert summary is not None and summary.value()["windows"] == 400
        raw = replica.value(local_key(machine, "window"))
        assert np.array_equal(np.frombuffer(raw, "<f4"), blocks[0].windows[-1])
        stored = Calibration.from_value(replica.value(local_key("calibration", "vibration")))
        assert stored is not None and stored.model_sha256 == ModelCard.load("vibration").sha256
        replicated = {path for path, _ in replica.keys() if not path.startswith("local/")}
        assert replicated == {machine_key(machine, leaf)
                              for leaf in ("anomalies", "alerts", "peak", "summary")}  # fmt: skip
    assert alert_name(1_700_000_000_123) == "2023-11-14T22:13:20.123Z"


def test_a_tracker_opens_one_alert_per_episode_across_batches() -> None:
    """An episode is a run of flagged windows, however the batches cut it: it is
    counted window by window and opens one alert, at its first window."""
    rng = np.random.default_rng(3)
    flags = rng.random(2_000) < 0.3
    flags[:3], flags[-40:] = True, True  # runs at the first window and across the last cut
    starts = np.arange(flags.size, dtype=np.int64) * 10 + 1_700_000_000_000
    tracker, hlc = (
        MachineTracker("m", "vibration", summary_every_s=1e9),
        HybridLogicalClock(lambda: 0),
    )
    opened, counted, at = [], 0, 0
    for size in (1, 7, 64, 1, 1, 300, 128) * 20:
        cut = slice(at, min(at + size, flags.size))
        if cut.start >= flags.size:
            break
        scores = np.where(flags[cut], 2.0, 0.5).astype(np.float32)
        windows = np.zeros((scores.size, 4), np.float32)
        scored = Scored(windows, windows, starts[cut], scores, 0.0)
        for path, _, mutation in tracker.updates(scored, 1.0, 0.0, hlc):
            if path.endswith("/alerts"):
                opened += cast(Add, mutation).elements
            elif path.endswith("/anomalies"):
                counted += cast(Increment, mutation).n
        at = cut.stop
    first = flags & ~np.concatenate([[False], flags[:-1]])
    assert opened == [alert_name(int(t)) for t in starts[first]]
    assert counted == tracker.anomalous == int(flags.sum()) and tracker.windows == flags.size


def test_coalesced_updates_leave_the_state_the_updates_one_by_one_leave(tmp_path: Path) -> None:
    """The daemon's writer hands the event loop one update per key per group: the
    pipeline's mutations fold into one before they run, other mutators chain."""

    def updates(hlc: HybridLogicalClock) -> list[Update]:
        def batch_of(i: int) -> list[Update]:
            return [
                ("m/anomalies", GCounter, Increment(i)),
                ("m/alerts", AWSet, Add([f"alert{i % 3}", f"alert{i % 2}"])),
                ("m/peak", MaxRegister, Raise(float(i % 4))),
                ("m/summary", LWWRegister, Assign(i, hlc)),
                ("m/other", GCounter, lambda c, actor: c.increment(actor, 2 * i)),
            ]

        return [update for i in range(6) for update in batch_of(i)]

    values = []
    for name, group in (("one_by_one", lambda u: u), ("coalesced", coalesce)):
        with open_replica(tmp_path / name, "edge") as replica:
            writer = EmbeddedWriter(replica)
            planned = group(updates(writer.hlc))
            writer.apply(planned)
            values.append({path: replica.value(path) for path, _ in replica.keys()})
            assert len(planned) == (30 if name == "one_by_one" else 5)
            if name == "coalesced":  # folded, not chained
                assert repr(planned[0][2]) == "Increment(15)"
                assert repr(planned[2][2]) == "Raise(3.0)"
    assert values[0] == values[1] == {"m/anomalies": 15, "m/alerts": {"alert0", "alert1", "alert2"},
                                      "m/peak": 3.0, "m/summary": 5, "m/other": 30}  # fmt: skip


def test_a_source_without_healthy_windows_calibrates_on_its_first_windows(tmp_path: Path) -> None:
    recording = tmp_path / "pump.npy"
    source = SimulatedSource("n", VIBRATION, 1, np.random.default_rng(4), realtime=False,
                             anomaly_rate=0.0, clock=lambda: 0.0)  # fmt: skip
    np.save(recording, np.concatenate([b.windows.reshape(-1) for b in source.step(700)]))
    with open_replica(tmp_path / "r", "edge") as replica:
        pipeline = Pipeline(
            EmbeddedWriter(replica), batch=128, calibration_windows=256, summary_every_s=0
        )
        replay = ReplaySource(recording, "pump", "vibration", 4000.0, 256, start_s=0.0)
        buffer = pipeline.add(replay)
        for block in replay.blocks():
            buffer.put(block)
        while pipeline.step():
            pass
        stored = Calibration.from_value(replica.value(local_key("calibration", "vibration")))
        assert stored is not None and stored.windows == 256
        summary = replica.value(machine_key("pump", "summary"))
        assert summary["windows"] == 700 and summary["threshold"] == pytest.approx(stored.threshold)


def test_recordings_read_csv_and_npy_and_refuse_garbage_by_line(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("t,value\n0.0,1.5\n0.1,-2\n\n0.2,3e-1\n")
    assert load_recording(tmp_path / "a.csv").tolist() == pytest.approx([1.5, -2.0, 0.3])
    (tmp_path / "b.csv").write_text("1\n2\nthree\n")
    with pytest.raises(RecordingError, match=r"b.csv:3: not a sample"):
        load_recording(tmp_path / "b.csv")
    np.save(tmp_path / "c.npy", np.zeros((2, 2)))
    with pytest.raises(RecordingError, match="1-D"):
        load_recording(tmp_path / "c.npy")
    with pytest.raises(RecordingError, match=r"\.csv or \.npy"):
        load_recording(tmp_path / "d.txt")
