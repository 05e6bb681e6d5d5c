"""The command line as a new user meets it, without a running cluster: help on every
command, global options on either side of the subcommand, finding the cluster from any
directory, free ports for a new cluster, and exit codes that match their documentation."""

from __future__ import annotations

import argparse
import re
import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from fabric.config import ClusterConfig, load_config
from shell import exits, lastdir
from shell.cli import build_parser, main
from shell.launcher import CONFIG_NAME, LaunchError, _on_free_ports, port_free, resolve_dir
from tests.integration.conftest import free_ports, write_config

ROOT = Path(__file__).resolve().parents[2]


def subcommands(
    parser: argparse.ArgumentParser, path: str = "fabric"
) -> Iterator[tuple[str, str | None, argparse.ArgumentParser]]:
    """(``fabric a b``, its one-line summary, its parser) for every subcommand."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            # A subcommand added without help= has no entry among the choice actions.
            summaries = {choice.dest: choice.help for choice in action._choices_actions}
            for name, child in action.choices.items():
                yield f"{path} {name}", summaries.get(name), child
                yield from subcommands(child, f"{path} {name}")


def test_every_subcommand_has_a_summary_and_a_description() -> None:
    found = list(subcommands(build_parser()))
    assert len(found) > 40, "the walk found the subcommands"
    missing = [name for name, summary, parser in found if not summary or not parser.description]
    assert not missing, f"no help text: {missing}"


@pytest.mark.parametrize(
    "argv",
    [
        ["--dir", "X", "--json", "status"],
        ["status", "--dir", "X", "--json"],
        ["--json", "vdisk", "list", "--dir", "X"],
        ["--dir", "X", "container", "show", "c", "--json"],
    ],
)
def test_global_options_go_before_or_after_the_subcommand(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert args.dir == "X" and args.json is True


def test_global_options_have_their_defaults_when_not_given() -> None:
    args = build_parser().parse_args(["status"])
    assert args.dir is None and args.json is False
    assert build_parser().parse_args(["--dir", "X", "run", "s.toml"]).dir == "X"
    assert build_parser().parse_args(["run", "s.toml"]).dir is None


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory without a cluster, and no FABRIC_DIR."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("FABRIC_DIR", raising=False)
    return cwd


def a_cluster_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / CONFIG_NAME).write_text("")
    return path


def test_commands_find_the_last_cluster_up_started_from_any_directory(
    elsewhere: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert resolve_dir(None) == str(elsewhere / "fabric-data"), "nothing remembered yet"
    started = a_cluster_dir(tmp_path / "big")
    lastdir.remember(str(started))
    assert resolve_dir(None) == str(started)
    # `up` makes its cluster where the user is, never in the remembered directory.
    assert resolve_dir(None, remembered=False) == str(elsewhere / "fabric-data")
    # ./fabric-data with a cluster, FABRIC_DIR and --dir win, in this order.
    here = a_cluster_dir(elsewhere / "fabric-data")
    assert resolve_dir(None) == str(here)
    monkeypatch.setenv("FABRIC_DIR", str(tmp_path / "env"))
    assert resolve_dir(None) == str(tmp_path / "env")
    assert resolve_dir(str(tmp_path / "arg")) == str(tmp_path / "arg")


def test_a_remembered_cluster_that_is_gone_is_not_used(elsewhere: Path, tmp_path: Path) -> None:
    lastdir.remember(str(tmp_path / "deleted"))
    assert resolve_dir(None) == str(elsewhere / "fabric-data")


def test_the_state_directory_follows_xdg_else_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, private_state_dir: Path
) -> None:
    lastdir.remember(str(tmp_path))
    assert (private_state_dir / "fabric" / "last-dir").read_text().strip() == str(tmp_path)
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert lastdir.state_dir() == str(tmp_path / "home" / ".local" / "state" / "fabric")
    assert lastdir.recall() is None
    lastdir.remember(str(tmp_path / "other"))
    assert lastdir.recall() == str(tmp_path / "other")


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port some other process listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def config_on(tmp_path: Path, nodes: int, first_port: int) -> ClusterConfig:
    cfg = load_config(str(write_config(tmp_path / "c.toml", nodes)))
    return replace(
        cfg, nodes=tuple(replace(n, port=first_port + i) for i, n in enumerate(cfg.nodes))
    )


def test_a_new_cluster_on_the_default_ports_moves_to_free_ones(
    tmp_path: Path, taken_port: int
) -> None:
    cfg = _on_free_ports(config_on(tmp_path, 3, taken_port), fixed=False, say=print)
    ports = [n.port for n in cfg.nodes]
    assert taken_port not in ports and ports == list(range(ports[0], ports[0] + 3))
    assert all(port_free("127.0.0.1", p) for p in ports)


def test_ports_the_user_fixed_are_refused_with_a_free_port_base(
    tmp_path: Path, taken_port: int
) -> None:
    cfg = config_on(tmp_path, 2, taken_port)
    with pytest.raises(LaunchError, match=r"--port-base \d+") as refused:
        _on_free_ports(cfg, fixed=True, say=print)
    suggested = int(re.findall(r"--port-base (\d+)", str(refused.value))[0])
    assert str(taken_port) in str(refused.value)
    assert port_free("127.0.0.1", suggested) and port_free("127.0.0.1", suggested + 1)


def test_init_with_port_base_puts_the_nodes_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = free_ports(1)[0]
    assert (
        main(["init", "--nodes", "3", "--port-base", str(base), "--dir", str(tmp_path / "c")]) == 0
    )
    text = (tmp_path / "c" / CONFIG_NAME).read_text()
    assert [int(p) for p in re.findall(r"^port = (\d+)", text, re.M)] == [base, base + 1, base + 2]


def stopped_cluster(tmp_path: Path) -> Path:
    """A local cluster directory whose nodes are not running (on ports nobody listens on)."""
    root = tmp_path / "stopped"
    root.mkdir()
    write_config(root / CONFIG_NAME, 2)
    for node in ("n1", "n2"):
        (root / "nodes" / node).mkdir(parents=True)
    return root


def test_a_cluster_of_other_hosts_that_does_not_answer_is_named_by_its_addresses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "remote"
    root.mkdir()
    write_config(root / CONFIG_NAME, 1)  # as `fabric init` leaves it: no node runs here
    port = re.findall(r"^port = (\d+)", (root / CONFIG_NAME).read_text(), re.M)[0]
    assert main(["kv", "get", "k", "--dir", str(root)]) == exits.NOT_RUNNING
    err = capsys.readouterr().err
    assert err == f"error: no node of the cluster in {root} answers (at 127.0.0.1:{port})\n"


@pytest.mark.parametrize(
    ("argv", "code", "says"),
    [
        (["vdisk", "list"], exits.NOT_RUNNING, "is not running (`fabric up --dir"),
        (["kv", "put", "k", "v"], exits.NOT_RUNNING, "is not running"),
        (["fault", "inject", "node-kill", "--param", "x"], exits.USAGE, "expected KEY=VALUE"),
        (["up", "--nodes", "99"], exits.USAGE, "--nodes 99"),
        (["vdisk", "write", "v", "no-such-file"], exits.USAGE, "no-such-file"),
        (["status", "--dir", "NONE"], exits.NOT_RUNNING, "no cluster in"),
    ],
)
def test_failing_commands_exit_with_their_documented_code_and_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    code: int,
    says: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    root = stopped_cluster(tmp_path) if argv[0] != "up" else tmp_path / "new"
    argv = [str(tmp_path / "none") if a == "NONE" else a for a in argv]
    if "--dir" not in argv:
        argv = ["--dir", str(root), *argv]
    assert main(argv) == code
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1, err


def test_bad_usage_exits_2() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == exits.USAGE


def test_the_help_and_the_readme_document_every_exit_code(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    shown = capsys.readouterr().out
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("### Exit codes") :]
    for code, what in exits.TABLE:
        assert re.search(rf"^\s+{code}\s+{re.escape(what)}$", shown, re.M), (code, shown)
        assert re.search(rf"^\| {code} \| ", table, re.M), f"README: no exit code {code}"
