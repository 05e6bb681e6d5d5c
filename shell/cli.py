"""``fabric``: the command line of the storage fabric.

Every command finds its cluster through ``--dir``, else ``$FABRIC_DIR``, else
``./fabric-data`` if it holds one, else the last cluster ``fabric up`` started
(``shell.lastdir``). The global options (``--dir``, ``--json``) go before or after the
subcommand. Commands that print data print one readable line or table, and the full
record with ``--json``. Exit codes: ``shell.exits`` (``fabric --help`` lists them).
"""

from __future__ import annotations

# Start-up time is part of the interface: `fabric --help` and `fabric status` load only
# argparse, the config and the stdlib. Each command imports what it needs (the HTTP
# client and asyncio, the launcher, tqdm, the node) when it runs; a test holds the line.
import argparse
import io
import json
import os
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from fabric import units
from shell import exits

if TYPE_CHECKING:
    from fabric.config import ClusterConfig
    from shell.client import FabricClient


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def _connect(args: argparse.Namespace, timeout_s: float = 30.0) -> FabricClient:
    """A client for the cluster of ``--dir``: its nodes, and only that cluster."""
    from shell.client import FabricClient
    from shell.launcher import ClusterDir, resolve_dir

    cdir = ClusterDir(resolve_dir(args.dir))
    cfg = cdir.config()
    return FabricClient(
        [n.url for n in cfg.nodes], timeout_s, cfg.id, cdir.token(), cdir.ssl_context(cfg)
    )


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    import asyncio

    return asyncio.run(coro)


# --- cluster lifecycle ----------------------------------------------------------------------
def cmd_up(args: argparse.Namespace) -> int:
    from shell import lastdir
    from shell.launcher import PartialStart, resolve_dir, up

    # `up` makes or restarts the cluster where the user is: never the remembered one.
    root = resolve_dir(args.dir, remembered=False)
    try:
        cfg = up(root, args.config, args.nodes, tls=args.tls, port_base=args.port_base)
    except PartialStart as exc:
        lastdir.remember(root)
        _print_up(root, exc.config)
        print(f"\nerror: {exc}", file=sys.stderr)
        return exits.PARTIAL_START
    lastdir.remember(root)
    _print_up(root, cfg)
    return 0


def _print_up(root: str, cfg: ClusterConfig) -> None:
    from shell.launcher import ClusterDir, status

    cdir = ClusterDir(root)
    print()
    _print_status(status(root))
    print()
    for node in cfg.nodes:
        print(f"  {node.id}: API {node.url}/api/v1   log {cdir.log_path(node.id)}")
    print(
        f"\n  console: {cfg.nodes[0].url}/ (any node serves it; "
        f"log in with the token in {cdir.token_path})"
    )


def cmd_init(args: argparse.Namespace) -> int:
    """Make a cluster directory (config, secret, admin token, CA) without starting it:
    what nodes on several hosts are given (docs/DEPLOY.md)."""
    from shell.launcher import ClusterDir, LaunchError, prepare, resolve_dir

    cdir = ClusterDir(resolve_dir(args.dir, remembered=False))
    if cdir.exists():
        raise LaunchError(f"{cdir.root} already holds a cluster")
    cfg = prepare(cdir, args.config, args.nodes, print, args.tls, args.port_base)
    print(f"cluster {cfg.name!r} (id {cfg.id}) made in {cdir.root}:")
    for path in (cdir.config_path, cdir.secret_path, cdir.token_path):
        print(f"  {path}")
    if cfg.tls is not None:
        print(f"  {os.path.join(cdir.root, 'tls')}/")
    print("give each host the config and the secret (and tls/); start each node with")
    print("  fabric node run --config cluster.toml --id ID --dir DATA --secret cluster.secret")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from shell.launcher import down, resolve_dir

    down(resolve_dir(args.dir))
    return 0


def cmd_restart(args: argparse.Namespace) -> int:
    from shell.launcher import resolve_dir

    root = resolve_dir(args.dir)
    if args.rolling:
        from shell.rolling import rolling_restart

        rolling_restart(root)
        return 0
    from shell.launcher import down, up

    down(root)
    up(root, None, None)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from shell.launcher import resolve_dir, status

    view = status(resolve_dir(args.dir))
    if args.json:
        _print_json(view)
    else:
        _print_status(view)
    return 0


def _print_status(view: dict[str, Any]) -> None:
    print(
        f"cluster {view['name']}   leader {view['leader'] or '-'}   dir {view['dir']}"
        f"   erasure coding: {view.get('erasure_backend', '-')}"
    )
    rows = [("NODE", "ROLE", "STATE", "ADDRESS", "PID", "DISKS")]
    for n in view["nodes"]:
        rows.append(
            (
                n["id"],
                n["role"],
                n["state"],
                n["address"],
                str(n.get("pid") or "-"),
                _disks(n.get("disks", [])),
            )
        )
    _table(rows)
    for n in view["nodes"]:
        if n["state"] != "UP" and n.get("state_reason"):
            print(f"  {n['id']} is {n['state']}: {n['state_reason']}")
    if view.get("containers"):
        print()
        _print_containers(view["containers"])
        _print_healing(view["containers"])


def _print_healing(containers: list[dict[str, Any]]) -> None:
    for c in containers:
        reduced = c.get("reduced_resiliency_bytes") or 0
        if not reduced:
            continue
        rate = c.get("rebuild_bytes_per_s") or 0
        eta = c.get("rebuild_eta_s")
        pace = f"rebuilding at {rate / 1e6:.1f} MB/s" if rate else "no rebuild running yet"
        tail = f", ETA {eta:.0f} s" if eta is not None else ""
        print(f"  {c['name']}: {_human(reduced)} at reduced resiliency; {pace}{tail}")


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
    # The node process's whole stack (services, aiohttp server) loads only here, so
    # every other command starts without it.
    from nodes.main import run_node

    return run_node(args.config, args.id, args.node_dir, args.secret)


# --- metadata key space ---------------------------------------------------------------------
def cmd_kv(args: argparse.Namespace) -> int:
    async def go() -> Any:
        async with _connect(args) as client:
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
    if args.json:
        _print_json(result)
    elif args.kv_cmd == "get":
        print(json.dumps(result["value"]))
    elif args.kv_cmd == "put":
        print(f"put {args.key} (version {result['version']})")
    else:
        print(f"deleted {args.key}")
    return 0


# --- access ---------------------------------------------------------------------------------
def cmd_token(args: argparse.Namespace) -> int:
    async def go() -> Any:
        async with _connect(args) as client:
            if args.token_cmd == "create":
                return await client.create_token(args.name, args.role)
            if args.token_cmd == "list":
                return await client.tokens()
            await client.revoke_token(args.id)
            return {"id": args.id, "revoked": True}

    result = _run(go())
    if args.json:
        _print_json(result)
    elif args.token_cmd == "create":
        print(result["token"])
        print(
            f"token {result['id']} for {result['name']!r}, role {result['role']}: shown only "
            "now; use it as FABRIC_TOKEN or 'Authorization: Bearer <token>'",
            file=sys.stderr,
        )
    elif args.token_cmd == "list":
        print(f"{'ID':<14}{'ROLE':<11}{'STATE':<9}NAME")
        for t in result:
            state = "revoked" if t["revoked"] else "active"
            print(f"{t['id']:<14}{t['role']:<11}{state:<9}{t['name']}")
    else:
        print(f"revoked token {args.id}")
    return 0


# --- healing --------------------------------------------------------------------------------
def cmd_rebuild(args: argparse.Namespace) -> int:
    async def go() -> Any:
        async with _connect(args) as client:
            return await client.rebuild(
                bytes_per_s=args.rate, per_node=args.per_node, delay_s=args.delay
            )

    result = _run(go())
    if args.json:
        _print_json(result)
        return 0
    st = result["settings"]
    rate = f"{st['bytes_per_s'] / 1e6:g} MB/s" if st["bytes_per_s"] else "unlimited"
    print(
        f"rebuild: rate {rate}, {st['per_node']} copies per node, "
        f"after {st['delay_s']:g} s DOWN; {st.get('copies_running', 0)} copies running"
    )
    rows = [("CONTAINER", "RESILIENCY", "REDUCED", "RATE", "ETA", "REBUILT", "REDUCED-TIME")]
    for c in result["containers"]:
        eta = c.get("rebuild_eta_s")
        rows.append(
            (
                c["name"],
                str(c["resiliency"]),
                _human(c.get("reduced_resiliency_bytes") or 0),
                f"{(c.get('rebuild_bytes_per_s') or 0) / 1e6:.1f} MB/s",
                "-" if eta is None else f"{eta:.0f} s",
                _human(c.get("rebuilt_bytes") or 0),
                f"{c.get('reduced_resiliency_seconds') or 0:.0f} s",
            )
        )
    _table(rows)
    return 0


def cmd_node_add(args: argparse.Namespace) -> int:
    from shell.launcher import resolve_dir
    from shell.members import add_node

    nc = add_node(resolve_dir(args.dir), voter=args.voter, rack=args.rack, node_id=args.id)
    if args.json:
        _print_json({"id": nc.id, "address": nc.address, "voter": args.voter})
    return 0


def cmd_node_remove(args: argparse.Namespace) -> int:
    from shell.launcher import resolve_dir
    from shell.members import remove_node

    remove_node(resolve_dir(args.dir), args.node)
    return 0


def cmd_node_replace(args: argparse.Namespace) -> int:
    from shell.launcher import resolve_dir
    from shell.members import replace_node

    nc = replace_node(resolve_dir(args.dir), args.dead, args.new)
    if args.json:
        _print_json({"id": nc.id, "address": nc.address, "replaced": args.dead})
    return 0


def cmd_node_rejoin(args: argparse.Namespace) -> int:
    async def go() -> Any:
        async with _connect(args, timeout_s=300) as client:
            return await client.rejoin(args.node)

    answer = _run(go())
    if args.json:
        _print_json(answer)
    else:
        print(f"{args.node}: rejoined the metadata as a {answer['role']}")
    return 0


def cmd_drain(args: argparse.Namespace) -> int:
    async def go() -> Any:
        async with _connect(args) as client:
            view = await client.drain(args.node, undo=args.undo)
            if args.wait and not args.undo:
                from shell.members import wait_drained

                quiet = args.json
                view = await wait_drained(
                    client, args.node, view, lambda line: None if quiet else print(line, flush=True)
                )
            return view

    view = _run(go())
    if args.json:
        _print_json(view)
    elif args.undo:
        print(f"{args.node}: no longer draining")
    elif view["groups"] or view["strips"]:
        print(f"{args.node}: draining; {_human(view['held_bytes'])} still to move")
    else:
        print(f"{args.node}: drained, it holds no data")
    return 0


def cmd_scrub(args: argparse.Namespace) -> int:
    async def go() -> Any:
        async with _connect(args) as client:
            return await client.scrub(now=args.now, bytes_per_s=args.rate, cycle_s=args.cycle)

    result = _run(go())
    if args.json:
        _print_json(result)
        return 0
    st = result["settings"]
    rate = f"{st['bytes_per_s'] / 1e6:g} MB/s" if st["bytes_per_s"] else "unlimited"
    started = "; a pass starts now on every node" if args.now else ""
    print(
        f"scrub: every node re-reads its data at {rate}, a pass every {st['cycle_s']:g} s{started}"
    )
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    async def go() -> None:
        import asyncio

        async with _connect(args) as client:
            answer = await client.events(since=args.since, limit=args.limit, kind=args.kind)
            _print_events(answer["events"], args.json)
            seen = answer["last_seq"]
            while args.follow:
                await asyncio.sleep(1.0)
                answer = await client.events(since=seen, kind=args.kind)
                _print_events(answer["events"], args.json)
                seen = answer["last_seq"]

    try:
        _run(go())
    except KeyboardInterrupt:
        pass
    return 0


def _print_events(events: list[dict[str, Any]], as_json: bool) -> None:
    for e in events:
        if as_json:
            print(json.dumps(e), flush=True)
            continue
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["at_wall"]))
        print(
            f"{e['seq']:>6}  {at}  {e['severity']:<7}  {e['kind']:<16}  {e['message']}", flush=True
        )


# --- containers and vdisks -----------------------------------------------------------------
def _argument(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """A parser of ``fabric.units`` as an argparse type (its message as the usage error)."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


parse_size = _argument(units.parse_size)
parse_rate = _argument(units.parse_rate)
parse_seconds = _argument(units.parse_seconds)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def cmd_container(args: argparse.Namespace) -> int:
    async def go() -> Any:
        async with _connect(args) as client:
            match args.container_cmd:
                case "create":
                    return await client.create_container(
                        args.name,
                        rf=args.rf,
                        dedup=args.dedup,
                        compression=args.compression,
                        compression_level=args.compression_level,
                        ec=args.ec,
                        ec_delay_s=args.ec_delay,
                    )
                case "list":
                    return await client.containers()
                case "show":
                    return await client.container(args.name)
                case "delete":
                    await client.delete_container(args.name)
                    return {"deleted": args.name}
        raise AssertionError(args.container_cmd)

    result = _run(go())
    if args.json:
        _print_json(result)
    elif args.container_cmd == "list":
        _print_containers(result)
    elif args.container_cmd == "show":
        _print_fields(result)
    elif args.container_cmd == "create":
        print(f"created container {result['name']} ({_policy(result)})")
    else:
        print(f"deleted container {args.name}")
    return 0


def _policy(c: dict[str, Any]) -> str:
    parts = [f"rf {c['rf']}"]
    if c.get("ec"):
        parts.append(f"ec {c['ec']}")
    if c.get("dedup"):
        parts.append("dedup")
    if c.get("compression") not in (None, "none"):
        parts.append(c["compression"])
    return ", ".join(parts)


def _print_fields(record: dict[str, Any]) -> None:
    """One record as ``field  value`` lines: sizes in binary units, times as local
    ISO-8601 (``--json`` has the numbers as they are)."""
    width = max(map(len, record), default=0)
    for key, value in record.items():
        print(f"{key:<{width}}  {_field(key, value)}")


def _field(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float) and (key in _TIME_FIELDS or key.endswith("_wall")):
        return _when(float(value))
    if isinstance(value, int) and (key == "size" or key.endswith("_bytes")):
        return f"{_exact(value)} ({value} bytes)" if value >= 1024 else f"{value} bytes"
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


_TIME_FIELDS = frozenset({"created", "updated", "at", "started", "finished"})
"""Record fields that hold seconds since the epoch."""


def _when(epoch_s: float) -> str:
    """Seconds since the epoch as local ISO-8601 time, to the second."""
    from datetime import datetime

    return datetime.fromtimestamp(epoch_s).astimezone().isoformat(timespec="seconds")


def _exact(n: int) -> str:
    """``10 GiB`` for a round size, else as ``_human`` rounds it."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return _human(n)


def _print_containers(views: list[dict[str, Any]]) -> None:
    rows = [
        (
            "CONTAINER",
            "RF",
            "EC",
            "DEDUP",
            "COMPRESS",
            "LOGICAL",
            "PHYSICAL",
            "DEDUP-RATIO",
            "ZSTD-RATIO",
            "EC-SAVED",
            "EC-STRIPS/PENDING",
            "RESILIENCY",
        )
    ]
    for c in views:
        rows.append(
            (
                c["name"],
                str(c["rf"]),
                c["ec"] or "-",
                "on" if c["dedup"] else "off",
                c["compression"],
                _human(c["logical_bytes"]),
                _human(c["physical_bytes"]),
                f"{c['dedup_ratio']:.2f}",
                f"{c['compression_ratio']:.2f}",
                _human(c.get("ec_savings_bytes", 0)) if c["ec"] else "-",
                f"{c.get('ec_strips', 0)}/{c.get('ec_pending_groups', 0)}" if c["ec"] else "-",
                str(c["resiliency"]),
            )
        )
    _table(rows)


def _table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def cmd_vdisk(args: argparse.Namespace) -> int:
    async def go() -> Any:
        async with _connect(args, 3600) as client:
            match args.vdisk_cmd:
                case "create":
                    return await client.create_vdisk(args.name, args.container, args.size)
                case "list":
                    return await client.vdisks()
                case "show":
                    return await client.vdisk(args.name)
                case "delete":
                    await client.delete_vdisk(args.name)
                    return {"deleted": args.name}
                case "write":
                    with _bar(args, f"write {args.name}", os.path.getsize(args.file)) as bar:
                        n = await client.write_vdisk(args.name, args.file, args.offset, bar.update)
                    return {"vdisk": args.name, "written": n, "offset": args.offset}
                case "read":
                    return await _read_to(client, args)
        raise AssertionError(args.vdisk_cmd)

    result = _run(go())
    if args.vdisk_cmd == "read" and args.output == "-":
        return 0
    if args.json:
        _print_json(result)
    elif args.vdisk_cmd == "list":
        _print_vdisks(result)
    elif args.vdisk_cmd == "show":
        _print_fields(result)
    else:
        print(_vdisk_done(args, result))
    return 0


def _print_vdisks(views: list[dict[str, Any]]) -> None:
    rows = [("VDISK", "ID", "CONTAINER", "SIZE", "WRITTEN", "CREATED")]
    rows += [
        (
            v["name"],
            v["id"],
            v["container"],
            _human(v["size"]),
            _human(v.get("logical_bytes", 0)),
            _when(v["created"]),
        )
        for v in views
    ]
    _table(rows)


def _vdisk_done(args: argparse.Namespace, result: dict[str, Any]) -> str:
    """The one line that says what a vdisk command did."""
    match args.vdisk_cmd:
        case "create":
            return (
                f"created vdisk {result['name']} ({_exact(result['size'])}, "
                f"container {result['container']})"
            )
        case "delete":
            return f"deleted vdisk {args.name}"
        case "write":
            return f"wrote {_human(result['written'])} to vdisk {args.name} at offset {args.offset}"
    holes = (
        f"; {_human(result['hole_bytes'])} of holes left unallocated"
        if result["hole_bytes"]
        else ""
    )
    return f"read {_human(result['read'])} of vdisk {args.name} into {args.output}{holes}"


def _bar(args: argparse.Namespace, what: str, total: int | None) -> Any:
    """A tqdm progress bar on standard error: on a terminal, or with ``--progress``
    (``--no-progress``: never); otherwise one that shows nothing, so pipes stay clean."""
    from tqdm import tqdm

    show = sys.stderr.isatty() if args.progress is None else args.progress
    return tqdm(
        total=total,
        desc=what,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=sys.stderr,
        disable=not show,
    )


async def _read_to(client: FabricClient, args: argparse.Namespace) -> dict[str, Any]:
    if args.output == "-":
        n = await client.read_vdisk(args.name, sys.stdout.buffer, args.offset, args.length)
        sys.stdout.buffer.flush()
        return {"vdisk": args.name, "read": n, "output": args.output}
    from shell.sparse import SparseWriter

    layout = await client.vdisk_extents(args.name)
    start = args.offset
    end = layout["size"] if args.length is None else start + args.length
    if not 0 <= start <= end <= layout["size"]:
        # Past the end: the node's refusal says so, as for any read.
        await client.read_vdisk(args.name, io.BytesIO(), args.offset, args.length)
    try:
        with open(args.output, "wb") as out, _bar(args, f"read {args.name}", end - start) as bar:
            sparse = SparseWriter(out)
            pos, transferred = start, 0
            # Only the extents that hold data cross the network; holes stay holes.
            for first, last in _data_ranges(layout, start, end):
                sparse.skip(first - pos)
                bar.update(first - pos)
                transferred += await client.read_vdisk(
                    args.name, sparse, first, last - first, bar.update
                )
                pos = last
            sparse.skip(end - pos)
            bar.update(end - pos)
            sparse.finish()
    except BaseException:
        # A partial file of the right name would look like a good copy.
        if os.path.isfile(args.output):
            os.unlink(args.output)
            print(f"removed the partial {args.output}", file=sys.stderr)
        raise
    return {
        "vdisk": args.name,
        "read": end - start,
        "output": args.output,
        "transferred_bytes": transferred,
        "hole_bytes": sparse.hole_bytes,
    }


READ_GAP_BYTES = 8 << 20
"""Data ranges closer than this are read as one (the zeros between still become holes):
fewer requests for a fragmented vdisk."""


def _data_ranges(layout: dict[str, Any], start: int, end: int) -> list[tuple[int, int]]:
    """The byte ranges within ``[start, end)`` of the extents that hold data, merged
    across gaps shorter than ``READ_GAP_BYTES``."""
    size, extent = layout["size"], layout["extent_bytes"]
    ranges: list[tuple[int, int]] = []
    for first, count in layout["mapped"]:
        lo = max(start, first * extent)
        hi = min(end, size, (first + count) * extent)
        if lo >= hi:
            continue
        if ranges and lo - ranges[-1][1] < READ_GAP_BYTES:
            ranges[-1] = (ranges[-1][0], hi)
        else:
            ranges.append((lo, hi))
    return ranges


# --- images -------------------------------------------------------------------------------
class Progress:
    """A progress bar on a terminal, a plain line every 10% (or 5 s) otherwise."""

    def __init__(self, what: str, total: int | None) -> None:
        self.what = what
        self.total = total
        self.done = 0
        self._bar: Any = None
        self._last_line = 0.0
        self._last_tenth = -1
        self._shown = -1
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=what,
                file=sys.stderr,
            )

    def update(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        tenth = self.done * 10 // self.total if self.total else -1
        now = time.monotonic()
        if tenth != self._last_tenth or now - self._last_line > 5:
            self._last_tenth, self._last_line = tenth, now
            self._line()

    def _line(self) -> None:
        self._shown = self.done
        pct = f" ({self.done * 100 // self.total}%)" if self.total else ""
        total = f" of {_human(self.total)}" if self.total else ""
        print(f"{self.what}: {_human(self.done)}{total}{pct}", file=sys.stderr)

    def set(self, done: int, total: int | None) -> None:
        if total and self.total != total:
            self.total = total
            if self._bar is not None:
                self._bar.total = total
        self.update(done - self.done)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._shown != self.done:
            self._line()  # the last line says where it ended


def cmd_image(args: argparse.Namespace) -> int:
    result = _run(_image(args))
    if args.image_cmd == "list" and not args.json:
        rows = [("IMAGE", "STATE", "TYPE", "FORMAT", "VIRTUAL", "SOURCE", "STORED", "SHA256")]
        rows += [
            (
                i["name"],
                i["state"],
                i["image_type"],
                i["source_format"] or "-",
                _human(i["virtual_size"] or 0),
                _human(i["source_bytes"] or 0),
                _human(i["stored_bytes"] or 0),
                (i["source_sha256"] or "-")[:16],
            )
            for i in result
        ]
        _table(rows)
    elif result is not None:
        _print_json(result)
    return 0


async def _image(args: argparse.Namespace) -> Any:
    async with _connect(args, 24 * 3600) as client:
        match args.image_cmd:
            case "upload":
                # Checked before the cluster is asked for anything: a wrong path must not
                # leave an image waiting for bytes that never come.
                with open(args.file, "rb"):
                    size = os.path.getsize(args.file)
                image = await client.create_image(
                    args.name,
                    container=args.container,
                    image_type=args.type,
                    source_format=args.format,
                    checksum=args.checksum,
                )
                bar = Progress(f"upload {args.name}", size)
                try:
                    return await client.upload_image(image["id"], args.file, bar.update)
                finally:
                    bar.close()
            case "import":
                image = await client.create_image(
                    args.name,
                    container=args.container,
                    image_type=args.type,
                    source_format=args.format,
                    checksum=args.checksum,
                    source_url=args.url,
                )
                if args.no_wait:
                    return image
                return await _follow(client, image)
            case "list":
                return await client.images()
            case "show":
                return await client.image(args.name)
            case "delete":
                await client.delete_image(args.name)
                return {"deleted": args.name}
            case "download":
                return await _download(client, args)
    raise AssertionError(args.image_cmd)


async def _follow(client: FabricClient, image: dict[str, Any]) -> dict[str, Any]:
    import asyncio

    from shell.client import ApiError

    bar = Progress(f"import {image['name']}", None)
    try:
        while True:
            task = await client.task(image["task_id"])
            bar.set(task["bytes_done"], task["bytes_expected"])
            if task["state"] in ("SUCCEEDED", "FAILED"):
                break
            await asyncio.sleep(0.5)
    finally:
        bar.close()
    final = await client.image(image["id"])
    if task["state"] == "FAILED":
        raise ApiError(422, "import_failed", task["error"] or "import failed")
    return final


async def _download(client: FabricClient, args: argparse.Namespace) -> dict[str, Any] | None:
    from shell.client import BrokenStream

    image = await client.image(args.name)
    if args.output == "-":
        await client.download_image(args.name, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return None
    offset = os.path.getsize(args.output) if args.resume and os.path.exists(args.output) else 0
    bar = Progress(f"download {args.name}", image["virtual_size"])
    bar.update(offset)
    try:
        with open(args.output, "ab" if offset else "wb") as out:
            n = await client.download_image(args.name, out, offset, bar.update)
    except BrokenStream as exc:
        # The partial file stays for --resume; the message says it is partial.
        raise BrokenStream(f"{exc}; {args.output} is partial (continue with --resume)") from exc
    finally:
        bar.close()
    return {"image": args.name, "output": args.output, "bytes": offset + n, "resumed_at": offset}


def cmd_run(args: argparse.Namespace) -> int:
    """``fabric run SCENARIO.toml``: an experiment (shell/experiment/runner.py)."""
    from shell.experiment.runner import run

    return run(args.scenario, args.seed, args.output, args.dir, time_scale=args.time_scale)


def cmd_sim(args: argparse.Namespace) -> int:
    """``fabric sim SCENARIO.toml``: the experiment on the simulator, by ``--model``; with
    ``--sweep``, every point of a grid over ``--seeds`` (shell/sim/sweep.py)."""
    stem = os.path.splitext(os.path.basename(args.scenario))[0]
    if args.shrink or args.swarm:
        if args.model != "full" or args.sweep:
            print(
                "fabric sim: --swarm and --shrink run the full model, without --sweep",
                file=sys.stderr,
            )
            return exits.USAGE
        from shell.sim import swarm

        if args.shrink:
            seed = "" if args.seed is None else f"-seed{args.seed}"
            out = args.output or os.path.join("fabric-runs", f"{stem}{seed}-shrink")
            return swarm.run_shrink(
                args.scenario,
                args.seed,
                out,
                args.time_scale,
                args.swarm,
                args.buggify,
                args.max_runs,
            )
        out = args.output or os.path.join("fabric-runs", f"{stem}-swarm")
        return swarm.run_swarm(
            args.scenario, args.seeds, out, args.time_scale, args.workers, args.liveness
        )
    if args.sweep:
        from shell.sim.sweep import run_sweep

        out = args.output or os.path.join("fabric-runs", f"{stem}-sweep")
        return run_sweep(
            args.scenario, args.sweep, args.seeds, out, args.model, args.scheduler, args.workers
        )
    return SIM_MODELS[args.model](args)


def _sim_full(args: argparse.Namespace) -> int:
    """The full model: real node code on virtual time (shell/sim/runner.py). The wall time
    and the speed-up go to stdout only: the report holds virtual time alone."""
    import logging

    from shell.sim.runner import run

    # The nodes' warnings (faults injected, peers unreachable) are the story the report
    # tells; on the terminal they would drown the progress line.
    logging.getLogger().setLevel(logging.ERROR)
    started = time.perf_counter()
    result = run(
        args.scenario,
        args.seed,
        args.output,
        args.time_scale,
        buggify=args.buggify,
        liveness_s=args.liveness,
    )
    wall_s = time.perf_counter() - started
    ratio = result.simulated_s / wall_s if wall_s > 0 else float("inf")
    print(
        f"simulated {result.simulated_s:.1f} s in {wall_s:.1f} s of wall time "
        f"({ratio:.1f}x real time)"
    )
    return result.code


def _sim_reliability(args: argparse.Namespace) -> int:
    """The reliability model: the scenario's ``[failures]`` over years, Monte Carlo beside
    the closed form (shell/sim/reliability.py)."""
    from shell.sim.reliability import run

    seed = 1 if args.seed is None else args.seed
    out = args.output or os.path.join(
        "fabric-runs", f"{os.path.splitext(os.path.basename(args.scenario))[0]}-reliability"
    )
    return run(args.scenario, seed, out, args.years, args.trials, args.nodes, args.racks)


def _sim_placement(args: argparse.Namespace) -> int:
    """The placement model once: the fabric's placement under the scenario's kills."""
    from fabric.scenario import ScenarioError, load_scenario
    from shell.sim.placement_model import run

    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        print(f"fabric sim: {exc}", file=sys.stderr)
        return exits.USAGE
    seed = scenario.seed if args.seed is None else args.seed
    for name, value in run(scenario, seed).items():
        print(f"{name:<32} {value:.6g}")
    return 0


SIM_MODELS: dict[str, Callable[[argparse.Namespace], int]] = {
    "full": _sim_full,
    "reliability": _sim_reliability,
    "placement": _sim_placement,
}
"""``fabric sim --model``: how the scenario is simulated."""


# --- faults --------------------------------------------------------------------------------
def _fault_target(args: argparse.Namespace) -> dict[str, Any] | None:
    def one(spec: str) -> dict[str, Any]:
        if spec.startswith("select:"):
            return {"select": spec[len("select:") :]}
        return {"nodes": [n for n in spec.split(",") if n]}

    base: dict[str, Any] | None = None
    if args.nodes:
        base = {"nodes": [n for n in args.nodes.split(",") if n]}
    elif args.select:
        base = {"select": args.select}
    if args.to is None:
        return base
    to: Any = "clients" if args.to == "clients" else one(args.to)
    return {"from": base or {"select": "all"}, "to": to}


def _fault_params(pairs: list[str]) -> dict[str, Any]:
    from fabric.errors import BadRequest
    from fabric.faults import parse_params

    try:
        return parse_params(pairs)
    except BadRequest as exc:
        raise UsageError(f"--param: {exc.message}") from None


def _resume_local(args: argparse.Namespace) -> list[str]:
    """SIGCONT every stopped node process of a local cluster (a paused node cannot hear
    the API); the node ids resumed."""
    import signal

    from shell.launcher import ClusterDir, resolve_dir

    cdir = ClusterDir(resolve_dir(args.dir))
    resumed = []
    for node in cdir.config().nodes:
        pid = cdir.pid(node.id)
        if pid is None:
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state in ("T", "t"):
            os.kill(pid, signal.SIGCONT)
            resumed.append(node.id)
    return resumed


def cmd_fault(args: argparse.Namespace) -> int:
    resumed: list[str] = []
    if args.fault_cmd == "clear" or (args.fault_cmd == "inject" and args.kind == "node-resume"):
        resumed = _resume_local(args)

    async def go() -> Any:
        async with _connect(args) as client:
            if args.fault_cmd == "inject":
                return await client.inject_fault(
                    args.kind,
                    _fault_target(args),
                    _fault_params(args.param),
                    args.duration,
                    args.seed,
                )
            if args.fault_cmd == "list":
                return await client.faults()
            await client.clear_faults(args.id)
            return {"cleared": args.id or "all", "resumed": resumed}

    result = _run(go())
    if args.json:
        _print_json(result)
    elif args.fault_cmd == "inject":
        until = result.get("until_wall")
        left = f" for {until - result['started_wall']:g} s" if until else " until cleared"
        print(f"{result['id']} {result['kind']} on {','.join(result['nodes'])}{left}")
        for node, why in (result.get("unreachable") or {}).items():
            print(f"  {node} unreachable: {why}", file=sys.stderr)
    elif args.fault_cmd == "list":
        rows = [("ID", "KIND", "NODES", "PARAMS", "LEFT")]
        now = time.time()
        for f in result:
            left = "-" if f["until_wall"] is None else f"{max(0, f['until_wall'] - now):.0f} s"
            params = ",".join(f"{k}={v}" for k, v in sorted(f["params"].items()))
            rows.append((f["id"], f["kind"], ",".join(f["nodes"]), params or "-", left))
        _table(rows)
    else:
        extra = f" (resumed {', '.join(resumed)})" if resumed else ""
        print(f"cleared {args.id or 'every fault'}{extra}")
    return 0


# --- wiring ---------------------------------------------------------------------------------
def _global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """``--dir`` and ``--json``: with defaults on the top-level parser; on a subcommand
    (``suppress``) without, so that an option given before the subcommand stays set."""
    parser.add_argument(
        "--dir",
        default=argparse.SUPPRESS if suppress else None,
        help="cluster directory (default: $FABRIC_DIR, else ./fabric-data if it holds a "
        "cluster, else the last cluster `fabric up` started)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="print the full record as JSON",
    )


def _port_base_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port-base",
        type=int,
        metavar="PORT",
        help="a new cluster's nodes listen on PORT, PORT+1, ... (default: the config's "
        "ports, moved up to free ones when taken unless the config was given)",
    )


def _progress_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: on a terminal only)",
    )


def _describe_subcommands(parser: argparse.ArgumentParser) -> None:
    """Every subcommand's ``--help`` opens with its one-line summary from the list."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                child = action.choices[choice.dest]
                if child.description is None:
                    child.description = choice.help
                _describe_subcommands(child)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fabric",
        description="A distributed storage fabric.",
        epilog=exits.epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # The global options go before the subcommand or after it: the top-level parser
    # gives their defaults, and a subcommand's copy (SUPPRESS) sets them only if given.
    _global_options(p, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, suppress=True)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("up", parents=[common], help="start a local cluster")
    s.add_argument("--nodes", type=int, help="number of nodes (1..15)")
    s.add_argument("--config", help="cluster config (TOML); default: the embedded one")
    s.add_argument(
        "--tls", action="store_true", help="HTTPS everywhere, with a private CA made for it"
    )
    _port_base_option(s)
    s.set_defaults(fn=cmd_up)
    rn = sub.add_parser(
        "run", help="run an experiment: cluster, workloads, faults, checks; write a report"
    )
    rn.add_argument("scenario", help="scenario file (TOML)")
    rn.add_argument("--seed", type=int, help="seed of the nemesis and workloads")
    rn.add_argument("-o", "--output", help="output folder (default: fabric-runs/NAME-seedN)")
    rn.add_argument(
        "--dir",
        default=argparse.SUPPRESS,
        help="run against the running cluster of this directory (default: a new one)",
    )
    rn.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="make the schedule this many times as long (0.25: the short form CI runs)",
    )
    rn.set_defaults(fn=cmd_run)
    sm = sub.add_parser(
        "sim", help="run an experiment's scenario on the deterministic simulator (virtual time)"
    )
    sm.add_argument("scenario", help="scenario file (TOML), as fabric run takes it")
    sm.add_argument("--seed", type=int, help="the seed of everything (default: the scenario's)")
    sm.add_argument("-o", "--output", help="output folder (default: fabric-runs/NAME-seedN-sim)")
    sm.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="make the schedule this many times as long (0.25: a short form)",
    )
    sm.add_argument(
        "--model",
        choices=sorted(SIM_MODELS),
        default="full",
        help="how to simulate: full (real node code on virtual time), reliability "
        "([failures] over years, Monte Carlo and closed form), placement (where the "
        "fabric places data, under the scenario's kills)",
    )
    sm.add_argument(
        "--buggify",
        action="store_true",
        help="full model: the nodes' BUGGIFY points misbehave on purpose, chosen by the seed",
    )
    bugs = sm.add_argument_group("finding bugs (full model)")
    bugs.add_argument(
        "--liveness",
        type=float,
        metavar="SECONDS",
        help="after the load the faults stop; the cluster must be back at full resiliency "
        "and take a write within SECONDS (virtual), or the liveness check fails",
    )
    bugs.add_argument(
        "--swarm",
        action="store_true",
        help="each of --seeds under a fault mix of its own (kinds, targets, pace, BUGGIFY); "
        "with --shrink, the mix of --seed",
    )
    bugs.add_argument(
        "--shrink",
        action="store_true",
        help="shrink the failing run of --seed to a 1-minimal fault schedule (delta "
        "debugging) and write it as a scenario file",
    )
    bugs.add_argument(
        "--max-runs", type=int, default=200, help="--shrink: at most this many reruns (200)"
    )
    rl = sm.add_argument_group("reliability model")
    rl.add_argument("--years", type=float, default=10.0, help="years per trial (default 10)")
    rl.add_argument("--trials", type=int, default=100, help="Monte Carlo trials (default 100)")
    rl.add_argument("--nodes", type=int, help="model this many nodes (default: the scenario's)")
    rl.add_argument("--racks", type=int, help="over this many racks (default: the scenario's)")
    from shell.sim.sweep_args import add_sweep_arguments

    add_sweep_arguments(sm.add_argument_group("sweeps"))
    sm.set_defaults(fn=cmd_sim)
    it = sub.add_parser(
        "init", parents=[common], help="make a cluster directory without starting it"
    )
    it.add_argument("--nodes", type=int, help="number of nodes (1..15)")
    it.add_argument("--config", help="cluster config (TOML); default: the embedded one")
    it.add_argument("--tls", action="store_true", help="make a private CA and a node certificate")
    _port_base_option(it)
    it.set_defaults(fn=cmd_init)
    sub.add_parser("down", parents=[common], help="stop the local cluster").set_defaults(
        fn=cmd_down
    )
    rs = sub.add_parser("restart", parents=[common], help="restart the local cluster's nodes")
    rs.add_argument(
        "--rolling",
        action="store_true",
        help="one node at a time, each after the cluster is back to full resiliency",
    )
    rs.set_defaults(fn=cmd_restart)
    sub.add_parser("status", parents=[common], help="nodes, roles, states").set_defaults(
        fn=cmd_status
    )

    rb = sub.add_parser(
        "rebuild", parents=[common], help="re-replication: progress, rate and delay"
    )
    rb.add_argument("--rate", type=parse_rate, help="cluster-wide limit, e.g. 200MB/s (0: none)")
    rb.add_argument("--per-node", type=int, help="copies one node takes part in at once")
    rb.add_argument("--delay", type=parse_seconds, help="rebuild after a node is DOWN this long")
    rb.set_defaults(fn=cmd_rebuild)
    sc = sub.add_parser("scrub", parents=[common], help="background verification of stored data")
    sc.add_argument("--now", action="store_true", help="start a pass on every node now")
    sc.add_argument("--rate", type=parse_rate, help="read rate of each node's scrubber")
    sc.add_argument("--cycle", type=parse_seconds, help="start a new pass this often, e.g. 1d")
    sc.set_defaults(fn=cmd_scrub)
    ev = sub.add_parser("events", parents=[common], help="the cluster's event log")
    ev.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
    ev.add_argument("--since", type=int, help="events after this sequence number")
    ev.add_argument("--limit", type=int, help="at most this many (default: the last 1000)")
    ev.add_argument("--kind", help="only these kinds (comma-separated)")
    ev.set_defaults(fn=cmd_events)
    node = sub.add_parser("node", help="add, remove, replace, drain or run a node").add_subparsers(
        dest="node_cmd", required=True
    )
    na = node.add_parser("add", parents=[common], help="start a new node that joins the cluster")
    na.add_argument("--voter", action="store_true", help="make it a metadata voter once caught up")
    na.add_argument("--rack", help="its rack label (fault domain)")
    na.add_argument("--id", help="its id (default: the next nN)")
    na.set_defaults(fn=cmd_node_add)
    nr = node.add_parser("remove", parents=[common], help="drain a node, then retire it")
    nr.add_argument("node")
    nr.set_defaults(fn=cmd_node_remove)
    nj = node.add_parser("rejoin", parents=[common], help="re-add a node whose Raft state was lost")
    nj.add_argument("node")
    nj.set_defaults(fn=cmd_node_rejoin)
    nx = node.add_parser("replace", parents=[common], help="replace a dead node by a new one")
    nx.add_argument("dead")
    nx.add_argument("new", nargs="?", help="the new node's id (default: the next nN)")
    nx.set_defaults(fn=cmd_node_replace)
    dr = node.add_parser(
        "drain", parents=[common], help="move every copy off a node (before it leaves)"
    )
    dr.add_argument("node")
    dr.add_argument("--wait", action="store_true", help="until the node holds no data")
    dr.add_argument("--undo", action="store_true", help="stop draining; new data may go there")
    dr.set_defaults(fn=cmd_drain)
    run = node.add_parser("run", help="run a node in the foreground")
    run.add_argument("--config", required=True, help="the cluster config (TOML)")
    run.add_argument("--id", required=True, help="which node of the config this one is")
    run.add_argument("--dir", dest="node_dir", help="the node's data directory")
    run.add_argument(
        "--secret", help="the cluster secret file (default: cluster.secret beside the config)"
    )
    run.set_defaults(fn=cmd_node_run)

    tk = sub.add_parser("token", help="API tokens: create, list, revoke").add_subparsers(
        dest="token_cmd", required=True
    )
    tc = tk.add_parser("create", parents=[common], help="a new token (printed once)")
    tc.add_argument("name", help="who or what it is for")
    tc.add_argument("--role", choices=("read-only", "operator", "admin"), default="read-only")
    tk.add_parser("list", parents=[common], help="every token (never the secret part)")
    tk.add_parser("revoke", parents=[common], help="revoke a token at once").add_argument("id")
    for parser in tk.choices.values():
        parser.set_defaults(fn=cmd_token)

    kv = sub.add_parser("kv", help="the metadata key space").add_subparsers(
        dest="kv_cmd", required=True
    )
    put = kv.add_parser("put", parents=[common], help="set a key to a value")
    put.add_argument("key")
    put.add_argument("value", help="JSON, or a plain string")
    kv.add_parser("get", parents=[common], help="a key's value").add_argument("key")
    kv.add_parser("delete", parents=[common], help="delete a key").add_argument("key")
    for name in ("put", "get", "delete"):
        kv.choices[name].set_defaults(fn=cmd_kv)

    ct = sub.add_parser("container", help="containers and their policies").add_subparsers(
        dest="container_cmd", required=True
    )
    c = ct.add_parser("create", parents=[common], help="create a container")
    c.add_argument("name")
    c.add_argument("--rf", type=int, default=2, help="replication factor 1..3 (default 2)")
    c.add_argument("--dedup", action="store_true", help="deduplicate extents by content")
    c.add_argument("--compression", choices=("none", "zstd"), default="none")
    c.add_argument("--compression-level", type=int, default=None)
    c.add_argument("--ec", help="erasure coding k+m of cold extent groups, e.g. 4+2")
    c.add_argument(
        "--ec-delay",
        type=parse_seconds,
        default=None,
        help="how long data stays cold before EC (e.g. 0s, 1h)",
    )
    ct.add_parser("list", parents=[common], help="containers: policy, usage, savings, resiliency")
    ct.add_parser("show", parents=[common], help="one container's policy and usage").add_argument(
        "name"
    )
    ct.add_parser("delete", parents=[common], help="delete an empty container").add_argument("name")
    for parser in ct.choices.values():
        parser.set_defaults(fn=cmd_container)

    vd = sub.add_parser("vdisk", help="virtual disks").add_subparsers(
        dest="vdisk_cmd", required=True
    )
    v = vd.add_parser("create", parents=[common], help="create a thin-provisioned vdisk")
    v.add_argument("name")
    v.add_argument("--container", required=True)
    v.add_argument("--size", type=parse_size, required=True, help="e.g. 10G")
    vd.add_parser("list", parents=[common], help="vdisks: size and bytes written")
    vd.add_parser("show", parents=[common], help="one vdisk").add_argument("name")
    vd.add_parser(
        "delete", parents=[common], help="delete a vdisk and release its extents"
    ).add_argument("name")
    w = vd.add_parser("write", parents=[common], help="stream a file into a vdisk")
    w.add_argument("name")
    w.add_argument("file")
    w.add_argument("--offset", type=parse_size, default=0, help="where in the vdisk (e.g. 1G)")
    _progress_option(w)
    r = vd.add_parser("read", parents=[common], help="stream a vdisk into a file")
    r.add_argument("name")
    r.add_argument("-o", "--output", required=True, help="file, or - for standard output")
    r.add_argument("--offset", type=parse_size, default=0, help="from where (e.g. 1G)")
    r.add_argument("--length", type=parse_size, default=None, help="how much (default: to the end)")
    _progress_option(r)
    for parser in vd.choices.values():
        parser.set_defaults(fn=cmd_vdisk)

    ft = sub.add_parser("fault", help="inject, list and clear faults").add_subparsers(
        dest="fault_cmd", required=True
    )
    fi = ft.add_parser("inject", parents=[common], help="inject a fault (admin)")
    from fabric.faults import KINDS

    fi.add_argument("kind", choices=KINDS)
    fi.add_argument("--nodes", help="target nodes, comma-separated (n1,n2)")
    fi.add_argument("--select", help="one, minority, majority, leader, all or rack:NAME")
    fi.add_argument(
        "--to", help="one-way network fault toward: nodes (n1,n2), select:SEL, or clients"
    )
    fi.add_argument("--param", action="append", default=[], help="KEY=VALUE (repeatable)")
    fi.add_argument(
        "--duration", type=parse_seconds, help="cleared by itself after this (30s, 500ms, 2m)"
    )
    fi.add_argument("--seed", type=int, help="seed of the target choice")
    ft.add_parser("list", parents=[common], help="active faults on every node")
    ft.add_parser("clear", parents=[common], help="clear one fault, or all").add_argument(
        "id", nargs="?"
    )
    for parser in ft.choices.values():
        parser.set_defaults(fn=cmd_fault)
    im = sub.add_parser("image", help="disk and ISO images").add_subparsers(
        dest="image_cmd", required=True
    )
    for verb, what in (("upload", "file"), ("import", "url")):
        i = im.add_parser(verb, parents=[common], help=f"create an image from a {what}")
        i.add_argument(what)
        i.add_argument("--name", required=True)
        i.add_argument("--container", help="default: the 'images' container (RF2, dedup, zstd)")
        i.add_argument(
            "--type",
            choices=("DISK", "ISO"),
            default=None,
            help="ISO only for ISO 9660 content, DISK only for the rest; default: from the content",
        )
        i.add_argument(
            "--format",
            choices=("raw", "qcow2", "vmdk", "vhd", "vhdx", "iso"),
            help="the source's format: content of another format is refused; "
            "default: detected from the content",
        )
        i.add_argument("--checksum", help="sha256:HEX or sha1:HEX of the source file")
        if verb == "import":
            i.add_argument("--no-wait", action="store_true", help="return once the task started")
    im.add_parser("list", parents=[common], help="every image: state, type, format, sizes")
    im.add_parser("show", parents=[common], help="one image's record as JSON").add_argument(
        "name", help="image name or id"
    )
    im.add_parser("delete", parents=[common], help="an image and its data").add_argument(
        "name", help="image name or id"
    )
    d = im.add_parser("download", parents=[common], help="the raw image, bit-exact")
    d.add_argument("name")
    d.add_argument("-o", "--output", required=True, help="file, or - for standard output")
    d.add_argument("--resume", action="store_true", help="continue a partial download")
    for parser in im.choices.values():
        parser.set_defaults(fn=cmd_image)
    _describe_subcommands(p)
    return p


class UsageError(Exception):
    """The command line asks for something malformed (argparse cannot tell)."""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    fn: Callable[[argparse.Namespace], int] = args.fn
    try:
        return fn(args)
    except KeyboardInterrupt:
        return exits.INTERRUPTED
    except BrokenPipeError:
        return exits.OK  # the reader of our output went away (| head): not an error of ours
    except Exception as exc:
        code = _exit_code(exc, args)
        if code is None:
            raise
        return code


def _exit_code(exc: Exception, args: argparse.Namespace) -> int | None:
    """Report an operating error in one line and return its exit code (``shell.exits``);
    None for a bug (re-raised).

    The error types load here, on failure only, so that no command pays for the
    modules of the others.
    """
    from fabric.config import ConfigError

    if isinstance(exc, (ConfigError, UsageError)):  # a ScenarioError, a LaunchRefused too
        print(f"error: {exc}", file=sys.stderr)
        return exits.USAGE
    from shell.launcher import LaunchError, NoCluster

    if isinstance(exc, LaunchError):
        print(f"error: {exc}", file=sys.stderr)
        return exits.NOT_RUNNING if isinstance(exc, NoCluster) else exits.FAILED
    if "shell.client" in sys.modules:  # only a command that loaded the client can raise these
        from shell.client import ApiError, BrokenStream, Unreachable

        if isinstance(exc, ApiError):
            print(f"error: {exc.message} ({exc.code})", file=sys.stderr)
            return exits.FAILED
        if isinstance(exc, Unreachable) and not exc.maybe_sent:
            print(f"error: {_not_running(args)}", file=sys.stderr)
            return exits.NOT_RUNNING
        if isinstance(exc, (Unreachable, BrokenStream)):
            print(f"error: {exc}", file=sys.stderr)
            return exits.FAILED
    if isinstance(exc, OSError):
        print(f"error: {exc.strerror or exc}: {exc.filename or ''}", file=sys.stderr)
        return exits.USAGE
    return None


def _not_running(args: argparse.Namespace) -> str:
    """Why no node answered, in one line: the nodes' own errors say the same thing N
    times over and name no remedy."""
    from shell.launcher import ClusterDir, resolve_dir

    cdir = ClusterDir(resolve_dir(getattr(args, "dir", None)))
    nodes = cdir.config().nodes
    alive = [n.id for n in nodes if cdir.pid(n.id) is not None]
    if not any(os.path.isdir(cdir.node_dir(n.id)) for n in nodes):
        # Made by `fabric init`: its nodes run on other hosts (docs/DEPLOY.md).
        where = ", ".join(n.address for n in nodes)
        return f"no node of the cluster in {cdir.root} answers (at {where})"
    if not alive:
        return (
            f"the cluster in {cdir.root} is not running (`fabric up --dir {cdir.root}` starts it)"
        )
    return (
        f"no node of the cluster in {cdir.root} answers, although {len(alive)} of its "
        f"{len(nodes)} node processes run (paused or overloaded? see `fabric status "
        f"--dir {cdir.root}` and the nodes' logs)"
    )


if __name__ == "__main__":
    sys.exit(main())
