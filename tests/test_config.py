"""A daemon's TOML config (``--config``): the flags' keys, flags win, one clear error."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from test_daemons import CLI, Fleet, cli

from edge_node.config import ConfigError, load_config
from sim.fleet import free_port


def toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


BASE = 'id = "e1"\ndata = "/var/lib/edgesync"\nlisten = "127.0.0.1:7402"\n'


def test_the_files_keys_are_the_flags_names_and_a_given_flag_wins(tmp_path: Path) -> None:
    path = toml(tmp_path, BASE + 'upstream = ["127.0.0.1:7401"]\nreconnect_max_ms = 500\n'
                'max_store_size = "512MiB"\ninsecure = true\npush = "fleet/"\n')  # fmt: skip
    cfg = load_config(path, {"listen": "127.0.0.1:9000", "reconnect_max_ms": None, "pull": []})
    assert (cfg.id, cfg.data, cfg.listen) == ("e1", Path("/var/lib/edgesync"), "127.0.0.1:9000")
    assert cfg.upstream == ["127.0.0.1:7401"] and cfg.reconnect_max_ms == 500
    assert cfg.max_store_bytes() == 512 << 20 and cfg.insecure
    assert cfg.push == ["fleet/"]  # one string for a list key: a list of one


@pytest.mark.parametrize(
    ("text", "refusal"),
    [
        ('reconnect_max_ms = "fast"', "--reconnect-max-ms takes a whole number, not 'fast'"),
        ("upstream = 5", "--upstream takes strings"),
        ('sensors = ["pump", 1]', "--sensors takes strings"),
        ('insecure = "yes"', "--insecure takes true or false, not 'yes'"),
        ("max_store_size = true", '--max-store-size takes a number of bytes or a size like "8GiB"'),
        ("max_links = 1.5", "--max-links takes a whole number, not 1.5"),
        ('colour = "blue"', "unknown config keys: colour"),
        ("id = ", "cannot read config"),
    ],
)
def test_a_value_of_the_wrong_kind_is_refused_naming_its_key(
    tmp_path: Path, text: str, refusal: str
) -> None:
    with pytest.raises(ConfigError, match=refusal.replace("(", r"\(").replace("[", r"\[")):
        load_config(toml(tmp_path, BASE + text + "\n"), {})


def test_missing_keys_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing --data, --listen"):
        load_config(toml(tmp_path, 'id = "e1"\n'), {})
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "absent.toml", {})


def test_a_node_runs_from_its_config_file_alone(fleet: Fleet, tmp_path: Path) -> None:
    hub = fleet.start("hub", "hub", "--role", "cloud")
    listen = fleet.addr["e1"] = f"127.0.0.1:{free_port()}"
    path = toml(tmp_path, f'id = "e1"\ndata = "{tmp_path / "e1"}"\nlisten = "{listen}"\n'
                f'upstream = "{hub}"\ninsecure = true\n')  # fmt: skip
    with (tmp_path / "e1.log").open("w") as log:
        command = [*CLI, "node", "--config", str(path)]
        fleet.procs["e1"] = subprocess.Popen(command, stdout=log, stderr=log, text=True)
    fleet.wait_ready()
    cli("inc", "--at", listen, "--insecure", "from/e1")
    assert len(fleet.converged()) == 1  # e1's write reached the hub it was told of
    assert fleet.status("e1")["id"] == "e1"
