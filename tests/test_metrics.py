"""Prometheus metrics of real daemons (edge_node/metrics.py), scraped over HTTP(S)."""

from __future__ import annotations

import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families
from test_daemons import Fleet, cli

from edge_node.certs import init_ca, issue
from sim.fleet import free_port

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(address: str, context: ssl.SSLContext | None = None) -> Samples:
    scheme = "http" if context is None else "https"
    with urllib.request.urlopen(f"{scheme}://{address}/metrics", timeout=10, context=context) as r:
        text = r.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape_when_up(address: str, context: ssl.SSLContext | None = None) -> Samples:
    deadline = time.monotonic() + 60
    while True:
        try:
            return scrape(address, context)
        except OSError:
            assert time.monotonic() < deadline, f"no metrics at {address}"
            time.sleep(0.2)


def one(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def info(samples: Samples) -> dict[str, str]:
    return next(dict(labels) for (name, labels) in samples if name == "edgesync_info")


def test_a_nodes_metrics_show_its_store_commits_and_links(fleet: Fleet) -> None:
    hub = fleet.start("hub", "hub", "--role", "cloud")
    metrics = f"127.0.0.1:{free_port()}"
    fleet.start("e1", "node", "--upstream", hub, "--metrics", metrics)
    fleet.wait_ready()
    for key in ("a", "b", "c"):
        cli("inc", "--at", fleet.addr["e1"], "--insecure", key, "2")
    assert len(fleet.converged()) == 1
    m = scrape_when_up(metrics)
    assert info(m) == {"node": "e1", "role": "edge", "epoch": fleet.status("e1")["epoch"]}
    assert one(m, "edgesync_keys") == 3
    assert one(m, "edgesync_commits_total") >= 3  # each acknowledged write committed
    assert one(m, "edgesync_link_up", link=hub) == 1
    assert one(m, "edgesync_link_lag", link=hub) == 0  # converged: the hub acknowledged all
    assert one(m, "edgesync_link_frames_refused_total", link=hub) == 0
    assert 0 < one(m, "edgesync_store_used_bytes") <= one(m, "edgesync_store_max_bytes")
    assert one(m, "edgesync_process_resident_memory_bytes") > 0


def test_a_hub_counts_the_links_it_turns_away(fleet: Fleet) -> None:
    metrics = f"127.0.0.1:{free_port()}"
    hub = fleet.start("hub", "hub", "--role", "regional", "--max-links", "1", "--metrics", metrics)
    for edge in ("e1", "e2"):
        fleet.start(edge, "node", "--upstream", hub, "--reconnect-max-ms", "500")
    fleet.wait_ready()
    deadline = time.monotonic() + 60
    while one(m := scrape_when_up(metrics), "edgesync_links_turned_away_total") == 0:
        assert time.monotonic() < deadline, "no link was turned away"
        time.sleep(0.2)
    ups = [v for (name, _), v in m.items() if name == "edgesync_link_up"]
    assert ups == [1.0]  # one link from below, the other turned away


def test_metrics_under_tls_ask_for_a_client_certificate_of_the_fleet(tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    init_ca(tls)
    issue(tls, "cloud", "cloud")
    issue(tls, "scraper", "client")
    metrics = f"127.0.0.1:{free_port()}"
    cmd = [sys.executable, "-m", "edge_node.cli", "hub", "--role", "cloud", "--id", "cloud",
           "--data", str(tmp_path / "cloud"), "--listen", f"127.0.0.1:{free_port()}",
           "--tls-dir", str(tls), "--metrics", metrics]  # fmt: skip
    with (tmp_path / "cloud.log").open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=log)
    try:
        trusted = ssl.create_default_context(cafile=str(tls / "ca.pem"))
        trusted.load_cert_chain(tls / "scraper.pem", tls / "scraper.key")
        scraped = scrape_when_up(metrics, trusted)
        assert info(scraped)["node"] == "cloud"
        pem = x509.load_pem_x509_certificate((tls / "cloud.pem").read_bytes())
        expiry = one(scraped, "edgesync_certificate_expiry_timestamp_seconds")
        assert expiry == int(pem.not_valid_after_utc.timestamp())
        stranger = ssl.create_default_context(cafile=str(tls / "ca.pem"))  # no certificate
        with pytest.raises(OSError):
            scrape(metrics, stranger)
        with pytest.raises(OSError):
            scrape(metrics)  # plain HTTP
    finally:
        proc.terminate()
        assert proc.wait(timeout=20) == 0


def test_plain_text_metrics_are_served_on_loopback_only(tmp_path: Path) -> None:
    base = ["node", "--id", "x", "--data", str(tmp_path / "x"), "--listen", "127.0.0.1:1",
            "--insecure"]  # fmt: skip
    public = cli(*base, "--metrics", "0.0.0.0:9464", check=False)
    assert public.returncode == 2 and "loopback only, not 0.0.0.0:9464" in public.stderr
    garbled = cli(*base, "--metrics", "9464", check=False)
    assert garbled.returncode == 2 and "--metrics takes HOST:PORT" in garbled.stderr
