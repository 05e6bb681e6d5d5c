"""The URL import guard, fed URLs and addresses: every refused class, the allow-list, own
nodes, IPv6 forms that carry an IPv4 address, and what a stored URL may show."""

from __future__ import annotations

import ipaddress

import pytest

from fabric.config import ConfigError, default_config_text, parse_config, render_config
from fabric.urlguard import (
    OwnNode,
    Refusal,
    Target,
    UrlGuard,
    allow_entry_problem,
    classify,
    guard_for,
    scrub,
    shown_url,
)

NODES = (OwnNode("n1", "127.0.0.1", 7101), OwnNode("n2", "127.0.0.1", 7102))


def verdict(guard: UrlGuard, url: str, address: str) -> str | None:
    """None when allowed, else the refusal's message."""
    target = guard.check_url(url)
    assert isinstance(target, Target), target
    refusal = guard.check_address(target, address)
    return None if refusal is None else refusal.message


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.9.9.9", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),  # the cloud metadata service
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.254", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "private: unique local"),
        ("fec0::1", "private: site-local"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.127.255.254", "carrier-grade NAT"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("0.1.2.3", "reserved: this network"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved: broadcast"),
        ("192.0.2.10", "reserved: documentation"),
        ("198.18.0.1", "reserved: benchmarking"),
        ("2001:db8::1", "reserved: documentation"),
        ("100::1", "reserved"),  # discard-only, outside global unicast
        ("2001::1", "reserved: protocol assignments"),  # Teredo
        ("::127.0.0.1", "reserved"),  # deprecated IPv4-compatible form
    ],
)
def test_every_non_public_class_is_refused_with_its_reason(address: str, reason: str) -> None:
    message = verdict(UrlGuard(), "http://example.org/disk.img", address)
    assert message is not None
    assert f"({reason})" in message and "allow it with [import] allow" in message


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("::ffff:127.0.0.1", "loopback, in IPv6 form"),
        ("::ffff:10.0.0.1", "private, in IPv6 form"),
        ("::ffff:169.254.169.254", "link-local, in IPv6 form"),
        ("::ffff:0:a00:1", "private, in IPv6 form"),  # IPv4-translated (SIIT)
        ("64:ff9b::7f00:1", "loopback, in IPv6 form"),  # NAT64 of 127.0.0.1
        ("2002:a01:203::1", "private, in IPv6 form"),  # 6to4 of 10.1.2.3
        ("2002:7f00:1::", "loopback, in IPv6 form"),
    ],
)
def test_ipv6_forms_carrying_an_ipv4_address_are_judged_by_it(address: str, reason: str) -> None:
    message = verdict(UrlGuard(), "http://example.org/", address)
    assert message is not None and f"({reason})" in message, message


@pytest.mark.parametrize(
    "address", ["93.184.215.14", "8.8.8.8", "2606:4700::6810:84e5", "::ffff:93.184.215.14"]
)
def test_public_addresses_are_allowed(address: str) -> None:
    assert classify(ipaddress.ip_address(address)) is None
    assert verdict(UrlGuard(), "https://example.org/", address) is None


def test_only_http_and_https_urls_with_a_host() -> None:
    guard = UrlGuard()
    for url in ("ftp://example.org/a", "file:///etc/passwd", "gopher://x/", "http:///nohost"):
        assert isinstance(guard.check_url(url), Refusal), url
    assert isinstance(guard.check_url("http://example.org:99999/"), Refusal)
    assert isinstance(guard.check_url("http://bücher.example/"), Refusal)
    target = guard.check_url("HTTPS://Images.Example.COM./a")
    assert target == Target("https", "images.example.com", 443, None)


def test_literal_addresses_are_refused_before_any_resolution() -> None:
    guard = UrlGuard()
    refusal = guard.check_literal("http://10.1.2.3/disk.img")
    assert refusal is not None
    assert refusal.message == (
        "refusing 10.1.2.3 (private); allow it with [import] allow in the config"
    )
    assert guard.check_literal("http://[::ffff:7f00:1]:8080/") is not None
    assert guard.check_literal("http://images.example.com/disk.img") is None  # resolved later
    assert guard.check_literal("http://93.184.215.14/disk.img") is None


def test_the_allow_list_opens_ranges_and_hosts() -> None:
    guard = UrlGuard(["127.0.0.1/32", "10.0.0.0/8", "fd00::/8", "mirror.corp", "*.lan"])
    assert verdict(guard, "http://127.0.0.1:8080/", "127.0.0.1") is None
    assert verdict(guard, "http://[::ffff:127.0.0.1]:8080/", "::ffff:127.0.0.1") is None
    assert verdict(guard, "http://127.0.0.2:8080/", "127.0.0.2") is not None  # /32 only
    assert verdict(guard, "http://x.example/", "10.200.0.1") is None
    assert verdict(guard, "http://x.example/", "fd00::5") is None
    assert verdict(guard, "http://x.example/", "192.168.0.1") is not None
    # A host on the list may resolve anywhere; only its own name is opened.
    assert verdict(guard, "http://MIRROR.corp./img", "192.168.7.7") is None
    assert verdict(guard, "http://other.corp/img", "192.168.7.7") is not None
    assert verdict(guard, "http://a.b.lan/img", "192.168.7.7") is None
    assert verdict(guard, "http://lan/img", "192.168.7.7") is not None  # *. is subdomains only
    assert verdict(guard, "http://evil-lan/img", "192.168.7.7") is not None


def test_own_nodes_are_refused_even_where_the_allow_list_opens_them() -> None:
    guard = UrlGuard(["127.0.0.0/8", "0.0.0.0/0", "::/0"], NODES)
    for url, address in [
        ("http://127.0.0.1:7101/metrics", "127.0.0.1"),
        ("http://[::ffff:127.0.0.1]:7102/api/v1/cluster", "::ffff:127.0.0.1"),
        ("http://innocent.example:7101/", "127.0.0.1"),  # a name that resolves to a node
    ]:
        message = verdict(guard, url, address)
        assert message is not None and "of this cluster" in message, (url, message)
    # Another port on the same host is not a node: the allow-list decides.
    assert verdict(guard, "http://127.0.0.1:8080/", "127.0.0.1") is None


def test_nodes_named_by_host_name_are_recognised_by_name_and_by_address() -> None:
    guard = UrlGuard(["10.0.0.0/8"], [OwnNode("n1", "node1.lan", 7101)])
    assert guard.node_names() == {"node1.lan"}
    assert verdict(guard, "http://NODE1.lan:7101/", "10.0.0.5") is not None
    assert verdict(guard, "http://10.0.0.5:7101/", "10.0.0.5") is None  # not yet known
    knowing = guard.knowing({"node1.lan": ["10.0.0.5"]})
    message = verdict(knowing, "http://10.0.0.5:7101/", "10.0.0.5")
    assert message is not None and "node n1 of this cluster" in message
    local = UrlGuard(["127.0.0.0/8"], [OwnNode("n1", "localhost", 7101)])
    assert verdict(local, "http://127.0.0.3:7101/", "127.0.0.3") is not None
    everywhere = UrlGuard(["0.0.0.0/0"], [OwnNode("n1", "0.0.0.0", 7101)])
    assert verdict(everywhere, "http://93.184.215.14:7101/", "93.184.215.14") is not None


def test_admit_keeps_the_allowed_addresses_or_gives_the_first_refusal() -> None:
    guard = UrlGuard(["127.0.0.1/32"])
    target = Target("http", "mixed.example", 80, None)
    assert guard.admit(target, ["10.1.2.3", "127.0.0.1", "93.184.215.14"]) == [
        "127.0.0.1",
        "93.184.215.14",
    ]
    refused = guard.admit(target, ["10.1.2.3", "169.254.1.1"])
    assert isinstance(refused, Refusal) and refused.subject == "10.1.2.3"
    assert isinstance(guard.admit(target, []), Refusal)


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ("10.0.0.1/8", "did you mean 10.0.0.0/8"),
        ("10.0.0.0/33", "not an address range"),
        ("not a host!", "neither a host name nor an address range"),
        ("-bad.example", "neither"),
        ("", "host name or an address range"),
    ],
)
def test_bad_allow_entries_are_named(entry: str, fragment: str) -> None:
    problem = allow_entry_problem(entry)
    assert problem is not None and fragment in problem


def test_allow_entries_accepted() -> None:
    for entry in ("127.0.0.1", "127.0.0.1/32", "::1", "fd00::/8", "a.example", "*.lan"):
        assert allow_entry_problem(entry) is None, entry


def test_the_config_parses_renders_and_names_the_line_of_a_bad_entry() -> None:
    allow = 'allow = [\n  "127.0.0.1/32",\n  "10.0.0.1/8",\n]'
    text = default_config_text().replace("allow = []", allow)
    with pytest.raises(ConfigError) as err:
        parse_config(text, "c.toml")
    line = text.splitlines().index('  "10.0.0.1/8",') + 1
    assert str(err.value).startswith(f"c.toml:{line}: import.allow: ")
    cfg = parse_config(text.replace("10.0.0.1/8", "images.example.com"))
    assert cfg.import_allow == ("127.0.0.1/32", "images.example.com")
    assert parse_config(render_config(cfg)) == cfg
    with pytest.raises(ConfigError, match=r"import\.deny: unknown setting"):
        parse_config(default_config_text().replace("allow = []", "deny = []"))
    with pytest.raises(ConfigError, match=r"import\.allow: must be a list"):
        parse_config(default_config_text().replace("allow = []", 'allow = "10.0.0.0/8"'))
    assert parse_config(default_config_text()).import_allow == ()


def test_guard_for_takes_the_cluster_nodes() -> None:
    guard = guard_for(["127.0.0.0/8"], [("n1", "127.0.0.1", 7101)])
    assert guard.check_literal("http://127.0.0.1:7101/metrics") is not None
    assert guard.check_literal("http://127.0.0.1:7109/metrics") is None


def test_stored_urls_show_no_credentials_and_no_query_values() -> None:
    url = "https://alice:s3cret@images.example.com:8443/a/disk.qcow2?token=abc&v=2&flag#frag"
    shown = shown_url(url)
    assert (
        shown == "https://images.example.com:8443/a/disk.qcow2?token=REDACTED&v=REDACTED&REDACTED"
    )
    assert "s3cret" not in shown and "alice" not in shown and "abc" not in shown
    assert shown_url("http://example.org/disk.img") == "http://example.org/disk.img"
    message = f"cannot connect to {url}: refused; query was token=abc&v=2&flag"
    assert "s3cret" not in scrub(message, url) and "abc" not in scrub(message, url)
