"""``fabric``: the command line of the storage fabric.

Every command finds its cluster through ``--dir``, else ``$FABRIC_DIR``, else
``./fabric-data``. Commands that print data take ``--json``. Exit codes: 0 success,
1 the cluster said no (or could not be reached), 2 bad usage or input.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from fabric.client import ApiError, FabricClient, Unreachable
from fabric.config import ConfigError


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def _client_urls(args: argparse.Namespace) -> list[str]:
    from nodes.launcher import ClusterDir, resolve_dir

    cfg = ClusterDir(resolve_dir(args.dir)).config()
    return [n.url for n in cfg.nodes]


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


# --- cluster lifecycle ----------------------------------------------------------------------
def cmd_up(args: argparse.Namespace) -> int:
    from nodes.launcher import ClusterDir, resolve_dir, status, up

    root = resolve_dir(args.dir)
    cfg = up(root, args.config, args.nodes)
    cdir = ClusterDir(root)
    print()
    _print_status(status(root))
    print()
    for node in cfg.nodes:
        print(f"  {node.id}: API {node.url}/api/v1   log {cdir.log_path(node.id)}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from nodes.launcher import down, resolve_dir

    down(resolve_dir(args.dir))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from nodes.launcher import resolve_dir, status

    view = status(resolve_dir(args.dir))
    if args.json:
        _print_json(view)
    else:
        _print_status(view)
    return 0


def _print_status(view: dict[str, Any]) -> None:
    print(f"cluster {view['name']}   leader {view['leader'] or '-'}   dir {view['dir']}")
    rows = [("NODE", "ROLE", "STATE", "ADDRESS", "PID", "DISKS")]
    for n in view["nodes"]:
        rows.append(
            (
                n["id"],
                n["role"],
                n["state"],
                n["address"],
                str(n.get("pid") or "-"),
                ",".join(
                    d if isinstance(d, str) else d.get("name", "?") for d in n.get("disks", [])
                ),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def _disks(disks: list[Any]) -> str:
    out = []
    for d in disks:
        if isinstance(d, str):
            out.append(d)
        elif d.get("state") != "UP":
            out.append(f"{d['name']}(FAILED)")
        else:
            out.append(f"{d['name']}({d['used_bytes'] / 2**20:.0f}M)")
    return ",".join(out)


def cmd_node_run(args: argparse.Namespace) -> int:
    from nodes.main import run_node

    return run_node(args.config, args.id, args.node_dir)


# --- metadata key space ---------------------------------------------------------------------
def cmd_kv(args: argparse.Namespace) -> int:
    async def go() -> Any:
        async with FabricClient(_client_urls(args)) as client:
            if args.kv_cmd == "put":
                try:
                    value = json.loads(args.value)
                except json.JSONDecodeError:
                    value = args.value
                return {"key": args.key, "version": await client.kv_put(args.key, value)}
            if args.kv_cmd == "get":
                return await client.kv_get(args.key)
            await client.kv_delete(args.key)
            return {"key": args.key, "deleted": True}

    result = _run(go())
    if args.json or args.kv_cmd != "get":
        _print_json(result)
    else:
        print(json.dumps(result["value"]))
    return 0


# --- wiring ---------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", help="cluster directory (default: $FABRIC_DIR or ./fabric-data)")
    common.add_argument("--json", action="store_true", help="print JSON")
    p = argparse.ArgumentParser(prog="fabric", description="A distributed storage fabric.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("up", parents=[common], help="start a local cluster")
    s.add_argument("--nodes", type=int, help="number of nodes (1..15)")
    s.add_argument("--config", help="cluster config (TOML); default: the embedded one")
    s.set_defaults(fn=cmd_up)
    sub.add_parser("down", parents=[common], help="stop the local cluster").set_defaults(
        fn=cmd_down
    )
    sub.add_parser("status", parents=[common], help="nodes, roles, states").set_defaults(
        fn=cmd_status
    )

    node = sub.add_parser("node", help="run one node process").add_subparsers(
        dest="node_cmd", required=True
    )
    run = node.add_parser("run", help="run a node in the foreground")
    run.add_argument("--config", required=True)
    run.add_argument("--id", required=True)
    run.add_argument("--dir", dest="node_dir", help="the node's data directory")
    run.set_defaults(fn=cmd_node_run)

    kv = sub.add_parser("kv", help="the metadata key space").add_subparsers(
        dest="kv_cmd", required=True
    )
    put = kv.add_parser("put", parents=[common])
    put.add_argument("key")
    put.add_argument("value", help="JSON, or a plain string")
    kv.add_parser("get", parents=[common]).add_argument("key")
    kv.add_parser("delete", parents=[common]).add_argument("key")
    for name in ("put", "get", "delete"):
        kv.choices[name].set_defaults(fn=cmd_kv)
    return p


def main(argv: list[str] | None = None) -> int:
    from nodes.launcher import LaunchError

    args = build_parser().parse_args(argv)
    fn: Callable[[argparse.Namespace], int] = args.fn
    try:
        return fn(args)
    except (ConfigError, LaunchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    except ApiError as exc:
        print(f"error: {exc.message} ({exc.code})", file=sys.stderr)
        return 1
    except Unreachable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
