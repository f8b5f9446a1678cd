"""The ``edgesync`` command line (the public contract in ../shared/design.md).

Exit status: 0 success, 1 failure (one clear line on stderr), 2 usage error.
Subcommands import their machinery lazily, so ``edgesync --help`` stays fast.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sensors import cli as sensors_cli

EXIT_FAILURE, EXIT_USAGE = 1, 2


class Failure(Exception):
    """A command failed; the message is the one line an operator sees."""


# ---- daemons ---------------------------------------------------------------------------


def _daemon(args: argparse.Namespace, role: Any) -> int:
    from edge_node import daemon
    from edge_node.config import ConfigError, load_config

    flags = {
        "id": args.id, "data": args.data, "listen": args.listen, "role": role.name,
        "upstream": args.upstream, "peer": getattr(args, "peer", None),
        "insecure": args.insecure, "tls_dir": args.tls_dir,
        "reconnect_max_ms": args.reconnect_max_ms, "new_epoch": args.new_epoch,
        "push": args.push, "pull": args.pull, "max_store_size": args.max_store_size,
        "max_links": args.max_links, "metrics": args.metrics,
        "down_push": getattr(args, "down_push", None),
        "down_pull": getattr(args, "down_pull", None),
        **sensors_cli.node_flags(args),
    }  # fmt: skip
    try:
        cfg = load_config(args.config, flags)
        daemon.check_config(cfg, role)
    except ConfigError as exc:
        print(f"edgesync {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    daemon.setup_logging()
    return daemon.run_event_loop(daemon.serve(cfg, role))


def _node(args: argparse.Namespace) -> int:
    from edge_node.edge import EDGE

    return _daemon(args, EDGE)


def _hub(args: argparse.Namespace) -> int:
    from cloud_hub.hub import HubRole

    return _daemon(args, HubRole(args.role))


# ---- client commands -------------------------------------------------------------------


def _stub(args: argparse.Namespace) -> Any:
    from sync.adapters.pb import client_pb2_grpc

    return client_pb2_grpc.ClientStub(_channel(args))


def _channel(args: argparse.Namespace) -> Any:
    import grpc

    if args.tls_dir is not None:
        from edge_node.client import channel_credentials

        return grpc.secure_channel(args.at, channel_credentials(args.tls_dir))
    if not args.insecure:
        raise Failure("choose --tls-dir DIR (mutual TLS) or --insecure (loopback only)")
    return grpc.insecure_channel(args.at)


def _update(args: argparse.Namespace, **op: Any) -> dict[str, Any]:
    from sync.adapters.pb import client_pb2

    reply = _stub(args).Update(client_pb2.UpdateRequest(key=args.key, **op), timeout=30)
    return {"key": args.key, "actor": reply.actor, "digest": reply.digest}


def _put(args: argparse.Namespace) -> dict[str, Any]:
    try:
        json.loads(args.value)
        as_json = args.value
    except ValueError:
        as_json = json.dumps(args.value)  # not JSON: store it as a string
    return _update(args, register_set_json=as_json)


def _inc(args: argparse.Namespace) -> dict[str, Any]:
    return _update(args, counter_add=args.n)


def _elements(args: argparse.Namespace, field: str) -> dict[str, Any]:
    from sync.adapters.pb import client_pb2

    return _update(args, **{field: client_pb2.ElementList(elements=args.elements)})


def _values(args: argparse.Namespace) -> dict[str, Any]:
    from edge_node.client import values_of
    from sync.adapters.pb import client_pb2

    return values_of(_stub(args).Get(client_pb2.GetRequest(key=args.key), timeout=30).values)


def _get(args: argparse.Namespace) -> dict[str, Any]:
    values = _values(args)
    if not values:
        raise Failure(f"no value at {args.key}")
    return {"key": args.key, "values": values}


def _del(args: argparse.Namespace) -> dict[str, Any]:
    from sync import crdt_types

    tags = {cls.__name__: cls.TYPE_TAG for cls in crdt_types()}
    result: dict[str, Any] = {"key": args.key, "removed": []}
    for name in _values(args):
        result.update(_update(args, remove_key=tags[name]))
        result["removed"].append(name)
    return result


def _keys(args: argparse.Namespace) -> dict[str, Any]:
    from edge_node.client_service import type_name
    from sync.adapters.pb import client_pb2

    reply = _stub(args).Keys(client_pb2.KeysRequest(prefix=args.prefix), timeout=30)
    return {"keys": [{"key": k.key, "type": type_name(k.type)} for k in reply.keys]}


def _status(args: argparse.Namespace) -> dict[str, Any]:
    from edge_node.client import status_of
    from sync.adapters.pb import client_pb2

    return status_of(_stub(args).Status(client_pb2.StatusRequest(prefix=args.prefix), timeout=30))


def _watch(args: argparse.Namespace) -> int:
    import grpc

    from edge_node.client import values_of
    from sync.adapters.pb import client_pb2, client_pb2_grpc

    request = client_pb2.WatchRequest(prefix=args.prefix)
    with _channel(args) as channel:
        call = client_pb2_grpc.ClientStub(channel).Watch(request)
        try:
            for change in call:
                values = values_of(change.values)
                line = json.dumps({"key": change.key, "values": values})
                print(line if args.json else f"{change.key} {_plain(values)}", flush=True)
        except KeyboardInterrupt:
            # Interrupted: end the call and close the channel before exiting; a call
            # left open can hold a gRPC client at exit (grpc/grpc#3820).
            call.cancel()
            raise
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            # The node went away mid-watch (it stopped, or restarted): say so, not
            # gRPC's "Cancelling all calls".
            raise Failure(
                f"the node at {args.at} ended the watch: it stopped or the connection "
                f"dropped ({_describe(exc)}); changes after the last line are not shown"
            ) from None
    return 0


def _plain(values: dict[str, Any]) -> str:
    return " ".join(f"{t}={json.dumps(v)}" for t, v in values.items()) or "(removed)"


def _show(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, sort_keys=True))
    elif "values" in result:
        print(_plain(result["values"]))
    elif "keys" in result:
        for k in result["keys"]:
            print(f"{k['key']} {k['type']}")
    elif "version_vector" in result:
        print(
            f"{result['id']} ({result['role']}) epoch {result['epoch']} digest {result['digest']}"
        )
        for p in result["peers"]:
            print(f"  peer {p['address']} connected={p['connected']} lag={p['lag']}{_refusals(p)}")
        print(f"  store {_store_line(result['store'])}")
        if result.get("certificate_expires"):
            print(f"  certificate {_expiry_line(result['certificate_expires'])}")
    else:
        print(f"ok {result.get('digest', '')[:16]}")


def _refusals(peer: dict[str, Any]) -> str:
    """Frames refused on a link, each way, with the last reason: empty when none."""
    out = ""
    if peer["refused"]:
        out += f" refused={peer['refused']} ({peer['last_refusal']})"
    if peer["refused_by_peer"]:
        out += f" refused_by_peer={peer['refused_by_peer']} ({peer['last_refused_by_peer']})"
    return out


def _expiry_line(expires: int) -> str:
    import datetime

    end = datetime.datetime.fromtimestamp(expires, datetime.UTC)
    days = (end - datetime.datetime.now(datetime.UTC)).days
    return f"valid until {end:%Y-%m-%d %H:%M} UTC ({days:,} days)"


def _store_line(store: dict[str, int]) -> str:
    used, ceiling = store["used_bytes"], store["max_bytes"]
    share = f" ({used / ceiling:.1%})" if ceiling else ""
    return (
        f"{_bytes(used)} of {_bytes(ceiling)}{share}, {store['keys']:,} keys, "
        f"{store['log_entries']:,} log entries, journal {_bytes(store['journal_bytes'])}"
    )


def _bytes(n: int) -> str:
    """``n`` bytes in the largest binary unit (up to GiB) that keeps it at 1 or more."""
    units = ["B", "KiB", "MiB", "GiB"]
    size, unit = float(n), units.pop(0)
    while size >= 1024 and units:
        size, unit = size / 1024, units.pop(0)
    return f"{n:,} B" if unit == "B" else f"{size:,.1f} {unit}"


def _client(command: Callable[[argparse.Namespace], dict[str, Any]]) -> Callable[..., int]:
    def run(args: argparse.Namespace) -> int:
        _show(command(args), args.json)
        return 0

    return run


# ---- certificates ----------------------------------------------------------------------


def _days(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a whole number of days, at least 1, not {text!r}")
    return int(text)


def _certs(args: argparse.Namespace) -> int:
    from edge_node.certs import VALID_DAYS, CertError, init_ca, issue

    try:
        if args.action == "init":
            path = init_ca(args.dir)
        else:
            path = issue(args.dir, args.id, args.role, args.host, args.days or VALID_DAYS)
    except CertError as exc:
        raise Failure(str(exc)) from None
    print(path)
    return 0


# ---- the demo ----------------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    from sim.demo import main as demo

    return demo(args)


# ---- parser ------------------------------------------------------------------------------


def _security(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--tls-dir", type=Path, help="mutual TLS material (from `certs`)")
    group.add_argument("--insecure", action="store_true", help="plain text, loopback only")


def _client_parser(commands: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = commands.add_parser(name, help=help_text)
    p.add_argument("--at", required=True, metavar="HOST:PORT", help="the node to ask")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _security(p)
    return p


def _daemon_parser(commands: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = commands.add_parser(name, help=help_text)
    p.add_argument("--id", help="this node's id")
    p.add_argument("--data", type=Path, help="directory of the store")
    p.add_argument("--listen", metavar="HOST:PORT")
    p.add_argument(
        "--upstream",
        action="append",
        default=[],
        metavar="[ID@]HOST:PORT",
        help="a hub to dial (repeat); with ID@, under TLS its certificate must be ID's",
    )
    p.add_argument("--config", type=Path, help="TOML file with the same keys as the flags")
    p.add_argument(
        "--reconnect-max-ms",
        type=int,
        metavar="MS",
        help="longest wait between redials of a lost link (default 10000)",
    )
    p.add_argument(
        "--push",
        action="append",
        default=[],
        metavar="PREFIX",
        help="send only keys under PREFIX to peers (repeat; default all)",
    )
    p.add_argument(
        "--pull",
        action="append",
        default=[],
        metavar="PREFIX",
        help="accept only keys under PREFIX from peers (repeat; default all)",
    )
    p.add_argument(
        "--max-store-size",
        metavar="SIZE",
        help="the store's ceiling, like 512MiB or 8GiB: past it, writes are refused "
        "while reads and sync go on (default 8GiB)",
    )
    p.add_argument(
        "--max-links",
        type=int,
        metavar="N",
        help="accept at most N links from peers that dial this daemon; more are refused "
        "and retry later (default 1024 on a hub, 64 on a node)",
    )
    p.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve Prometheus metrics at http(s)://HOST:PORT/metrics: HTTPS with client "
        "certificates of the fleet's CA under --tls-dir, plain HTTP on loopback under --insecure",
    )
    p.add_argument("--new-epoch", action="store_true",
                   help="start a new epoch: after restoring the store from a backup")  # fmt: skip
    _security(p)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgesync", description="CRDT-based, offline-first state sync for edge fleets."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_daemons(commands)
    _add_client_commands(commands)
    _add_certs(commands)
    _add_sim_and_demo(commands)
    return parser


def _add_daemons(commands: Any) -> None:
    node = _daemon_parser(commands, "node", "run an edge node daemon")
    node.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="[ID@]HOST:PORT",
        help="an edge to dial (repeat); with ID@, it must be node ID",
    )
    sensors_cli.add_node_flags(node)
    node.set_defaults(run=_node)
    hub = _daemon_parser(commands, "hub", "run a regional or cloud hub daemon")
    hub.add_argument("--role", choices=["regional", "cloud"], required=True)
    for flag, verb in (("--down-push", "send only keys under PREFIX"),
                       ("--down-pull", "accept only keys under PREFIX")):  # fmt: skip
        hub.add_argument(
            flag, action="append", default=[], metavar="PREFIX",
            help=f"{verb} on links from below (peers that dial this hub), in place of "
            f"{flag.replace('down-', '')} there (repeat)",
        )  # fmt: skip
    hub.set_defaults(run=_hub)


def _add_client_commands(commands: Any) -> None:
    p = _client_parser(commands, "put", "set a register (VALUE is JSON if it parses)")
    p.add_argument("key")
    p.add_argument("value")
    p.set_defaults(run=_client(_put))
    p = _client_parser(commands, "get", "read every value at a key")
    p.add_argument("key")
    p.set_defaults(run=_client(_get))
    p = _client_parser(commands, "inc", "add to a counter (negative N decrements)")
    p.add_argument("key")
    p.add_argument("n", nargs="?", type=int, default=1)
    p.set_defaults(run=_client(_inc))
    for name, field, text in (
        ("add", "set_add", "add to a set"),
        ("rm", "set_remove", "remove from a set"),
    ):
        p = _client_parser(commands, name, text)
        p.add_argument("key")
        p.add_argument("elements", nargs="+", metavar="ELEMENT")
        p.set_defaults(run=_client(functools.partial(_elements, field=field)))
    p = _client_parser(commands, "del", "observed-remove of every value at a key")
    p.add_argument("key")
    p.set_defaults(run=_client(_del))
    for name, run, text in (("keys", _keys, "list keys"), ("status", _status, "node status")):
        p = _client_parser(commands, name, text)
        if name == "keys":
            p.add_argument("prefix", nargs="?", default="")
        else:
            p.add_argument("--prefix", default="")
        p.set_defaults(run=_client(run))
    p = _client_parser(commands, "watch", "print one line per change, until interrupted")
    p.add_argument("prefix", nargs="?", default="")
    p.set_defaults(run=_watch)


def _add_certs(commands: Any) -> None:
    certs = commands.add_parser("certs", help="make the CA and node or client certificates")
    actions = certs.add_subparsers(dest="action", required=True)
    init = actions.add_parser("init", help="make a CA in DIR")
    init.add_argument("--dir", type=Path, required=True)
    issue = actions.add_parser("issue", help="make a certificate signed by DIR's CA")
    issue.add_argument("--dir", type=Path, required=True)
    issue.add_argument("--id", required=True)
    issue.add_argument("--role", choices=["edge", "regional", "cloud", "client"], required=True)
    issue.add_argument("--host", action="append", default=[], metavar="ADDRESS",
                       help="an IP or DNS name clients dial this node at (repeat)")  # fmt: skip
    issue.add_argument("--days", type=_days, default=None,
                       help="how long it is valid (default 825); a daemon warns daily in its "
                       "last 30, and shows its end in status and metrics")  # fmt: skip
    certs.set_defaults(run=_certs)


def _add_sim_and_demo(commands: Any) -> None:
    from sim.demo import add_arguments as demo_arguments

    demo = commands.add_parser("demo", help="a small fleet on loopback, a partition, a heal")
    demo_arguments(demo)
    demo.set_defaults(run=_demo)
    from sim.cli import add_sim_parser  # sim run | sweep | chaos: registered by sim

    add_sim_parser(commands)
    sensors_cli.add_commands(commands)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except KeyboardInterrupt:
        return 0 if args.command == "watch" else 130
    except BrokenPipeError:  # `edgesync watch ... | head`: the reader left, as with SIGPIPE
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 128 + signal.SIGPIPE
    except Failure as exc:
        print(f"edgesync {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except Exception as exc:  # one clear line, never a traceback, for an operator
        print(f"edgesync {args.command}: error: {_describe(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    return code


def _describe(exc: Exception) -> str:
    code, details = getattr(exc, "code", None), getattr(exc, "details", None)
    if callable(code) and callable(details):  # a grpc.RpcError
        return f"{code().name}: {details()}"
    return str(exc) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
