"""A run's report, written next to it: JSON always, a PNG plot when matplotlib is there.

``report.json`` holds the run's summary (the ``--json`` fields), every violation,
and the convergence samples: at each sample time, how many replicas hold the
state the largest group holds, and how many bytes are in flight. ``events.log``
is the event log whose SHA-256 is ``event_log_hash``; ``scenario.txt`` replays the
run. ``convergence.png`` plots the samples; matplotlib is the optional ``plot``
extra, and without it the JSON is still written and the report says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sim.simulator import RunResult


def write_report(result: RunResult, summary: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    data = {
        **summary,
        "samples": [
            {"at_ms": s.at, "agreeing": s.agreeing, "bytes_in_flight": s.bytes_in_flight}
            for s in result.samples
        ],
    }
    written = [out / "report.json", out / "events.log", out / "scenario.txt"]
    plot = out / "convergence.png"
    data["plot"] = (
        plot.name if _plot(result, summary["seed"], plot) else "matplotlib not installed: no plot"
    )
    written[0].write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    written[1].write_text("\n".join(result.events) + "\n", encoding="utf-8")
    written[2].write_text(result.scenario.text(), encoding="utf-8")
    return [*written, plot] if plot.exists() else written


def _plot(result: RunResult, seed: object, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    seconds = [s.at / 1000 for s in result.samples]
    fig, agree = plt.subplots(figsize=(9, 4))
    agree.step(seconds, [s.agreeing for s in result.samples], where="post", color="tab:blue")
    agree.set_xlabel("virtual time (s)")
    agree.set_ylabel("replicas in agreement", color="tab:blue")
    agree.set_ylim(0, result.stats.get("nodes", 1) + 0.5)
    flight = agree.twinx()
    flight.plot(seconds, [s.bytes_in_flight for s in result.samples], color="tab:orange", lw=0.8)
    flight.set_ylabel("bytes in flight", color="tab:orange")
    verdict = "converged" if result.converged else "NOT converged"
    agree.set_title(f"seed {seed}: {verdict}, {len(result.violations)} violations")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
