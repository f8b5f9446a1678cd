"""The committed generated code is exactly what scripts/gen_proto.py produces."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "sync" / "adapters" / "pb"


def test_regenerating_the_protobuf_code_changes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "pb"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), str(out)],
        check=True,
        capture_output=True,
    )
    fresh = {p.name: p.read_bytes() for p in out.iterdir()}
    committed = {p.name: p.read_bytes() for p in COMMITTED.iterdir() if p.is_file()}
    assert fresh.keys() == committed.keys()
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"run `python scripts/gen_proto.py`: {stale} are out of date"


def test_generated_code_imports_without_a_top_level_proto_package() -> None:
    from sync.adapters.pb import client_pb2, replication_pb2, replication_pb2_grpc

    frame = replication_pb2.Frame(message=b"\x01", signature=b"")
    assert replication_pb2.Frame.FromString(frame.SerializeToString()) == frame
    assert hasattr(replication_pb2_grpc, "ReplicationServicer")
    assert client_pb2.CrdtType.Value("AW_SET") == 5
    assert "proto" not in sys.modules


def test_wire_type_numbers_are_the_crdt_type_tags() -> None:
    from sync import crdt_types
    from sync.adapters.pb import client_pb2

    names = {
        "GCounter": "GCOUNTER", "PNCounter": "PNCOUNTER", "LWWRegister": "LWW_REGISTER",
        "MVRegister": "MV_REGISTER", "AWSet": "AW_SET", "EWFlag": "EW_FLAG",
        "MaxRegister": "MAX_REGISTER", "MinRegister": "MIN_REGISTER", "ORMap": "OR_MAP",
    }  # fmt: skip
    for cls in crdt_types():
        assert client_pb2.CrdtType.Value(names[cls.__name__]) == cls.TYPE_TAG
