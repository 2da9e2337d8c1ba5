"""Controlled egress: the rules of an app's destinations and the nftables text that opens only them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ansible_collections.secure_streamlit.hosting.plugins.module_utils._egress import (
    TABLE,
    Rule,
    app_ruleset,
    dropped_packets,
    egress_problem,
    extra_hosts,
    host_local_errors,
    interface_name,
    local_address,
    main_ruleset,
    network_name,
    parse_egress,
    resolve,
)


def lookup(table: dict[str, list[str]]):
    def answer(host: str) -> list[str]:
        return table.get(host, [])

    return answer


def test_destinations_are_normalised():
    entries, errors = parse_egress(
        [
            {"host": "Api.Example.org", "port": 443},
            {"cidr": "10.20.0.0/16", "port": 5432},
            {"cidr": "10.0.0.9", "port": 1},
        ]
    )
    assert errors == []
    assert entries == [
        {"allow_any": False, "host": "api.example.org", "port": 443},
        {"allow_any": False, "cidr": "10.20.0.0/16", "port": 5432},
        {"allow_any": False, "cidr": "10.0.0.9/32", "port": 1},
    ]
    # The normalised form reads back as itself (the host's deployer checks it again).
    assert parse_egress(entries) == (entries, [])
    assert egress_problem(entries) is None


@pytest.mark.parametrize(
    ("value", "part"),
    [
        ([{"cidr": "0.0.0.0/0", "port": 443}], "egress[0].cidr '0.0.0.0/0' opens every destination"),
        ([{"cidr": "::/0", "port": 443}], "allow_any: true"),
        ([{"cidr": "0.0.0.0/1", "port": 443}], "allow_any: true"),
        ([{"cidr": "10.0.0.0/8", "port": 443, "allow_any": True}], "allow_any applies only to networks wider"),
        ([{"host": "a.example.org", "port": 443, "allow_any": True}], "allow_any applies only"),
        ([{"cidr": "0.0.0.0/0", "port": 443, "allow_any": "yes"}], "allow_any must be true or false"),
        ([{"host": "a.example.org", "port": 65536}], "egress[0].port 65536 must be a whole number within 1..65535"),
        ([{"host": "a.example.org", "port": True}], "egress[0].port True"),
        ([{"host": "a.example.org", "port": 4.5}], "egress[0].port 4.5"),
        ([{"host": "a.example.org"}], "egress[0].port is missing"),
        ([{"host": "a_b.example.org", "port": 1}], "is not a host name"),
        ([{"host": "a.example.org.", "port": 1}], "is not a host name"),
        ([{"host": "a.example.org\n", "port": 1}], "'a.example.org\\n' is not a host name"),
        ([{"host": "a.example.org:443", "port": 1}], "is not a host name"),
        ([{"host": "localhost", "port": 1}], "the container itself"),
        ([{"host": "192.0.2.1", "port": 1}], "write it as cidr"),
        ([{"cidr": "10.0.0.0/33", "port": 1}], "is not a network"),
        ([{"cidr": "10.0.0.1/8", "port": 1}], "is not a network"),
        ([{"cidr": "10.0.0.0/8\n", "port": 1}], "is not an address or a network"),
        ([{"cidr": "127.0.0.0/8", "port": 1}], "the container itself"),
        ([{"cidr": "::1", "port": 1}], "the container itself"),
        ([{"port": 1}], "needs exactly one of host"),
        ([{"host": "a.example.org", "port": 1, "prot": "udp"}], "egress[0]: unknown key 'prot'"),
        (["a.example.org:443"], "egress[0] must be a mapping"),
        ({"host": "a.example.org", "port": 1}, "egress must be a list"),
        ([{"cidr": "10.0.0.0/8", "port": 1}, {"cidr": "10.0.0.0/8", "port": 1}], "egress[1] repeats egress[0]"),
        ([{"cidr": "10.0.0.0/8", "port": 1}] * 65, "at most 64"),
    ],
)
def test_bad_destinations_are_refused_by_index(value, part):
    entries, errors = parse_egress(value)
    assert entries == []
    assert any(part in e for e in errors), errors


def test_every_bad_item_is_reported_not_only_the_first():
    _entries, errors = parse_egress([{"cidr": "0.0.0.0/0", "port": 1}, {"host": "x.example.org", "port": 0}])
    assert [e.split(".")[0].split(" ")[0] for e in errors] == ["egress[0]", "egress[1]"]


def test_a_name_becomes_one_address_in_hosts_and_in_the_rule():
    entries, _ = parse_egress([{"host": "db.lab.test", "port": 5432}, {"cidr": "10.20.0.0/16", "port": 443}])
    rules = resolve(entries, lookup({"db.lab.test": ["198.18.0.20", "198.18.0.10", "2001:db8::1"]}))
    assert rules == [Rule("198.18.0.10/32", 5432, "db.lab.test"), Rule("10.20.0.0/16", 443)]
    assert extra_hosts(rules) == {"db.lab.test": "198.18.0.10"}


@pytest.mark.parametrize(
    ("answer", "part"),
    [([], "has no IPv4 address"), (["2001:db8::1"], "has no IPv4 address"), (["127.0.1.1"], "the container itself")],
)
def test_a_name_that_does_not_resolve_usably_fails_the_deploy(answer, part):
    entries, _ = parse_egress([{"host": "db.lab.test", "port": 5432}])
    with pytest.raises(ValueError, match=part):
        resolve(entries, lookup({"db.lab.test": answer}))


def test_names_are_per_app_and_fit_the_kernel():
    assert interface_name("hello") != interface_name("hello-2")
    assert len(interface_name("a" * 41)) == 15
    assert interface_name("hello").startswith("sse")
    assert network_name("hello") == "streamlit-egress-hello"
    for bad in ("Hello", "a b", "-x", "x\n", ""):
        with pytest.raises(ValueError, match="not an app name"):
            interface_name(bad)


def test_the_app_chain_accepts_only_its_destinations_then_logs_and_drops():
    rules = [Rule("198.18.0.10/32", 8080, "target.lab.test"), Rule("10.20.0.0/16", 443), Rule("::/0", 443)]
    text = app_ruleset("hello", rules)
    interface = interface_name("hello")
    chain = f"app_{interface}"
    body = text[text.index(f"chain {chain} {{") :]
    lines = [line.strip() for line in body.splitlines()[1:]]
    assert lines[:7] == [
        "ct state established,related accept",
        "ct state invalid drop",
        'ip daddr 198.18.0.10/32 tcp dport 8080 counter accept comment "target.lab.test"',
        "ip daddr 10.20.0.0/16 tcp dport 443 counter accept",
        "meta nfproto ipv6 tcp dport 443 counter accept",
        'limit rate 10/second burst 20 packets log prefix "streamlit-egress drop hello: " level warn',
        "counter drop",
    ]
    # Keyed on the app's own bridge, in both hooks: other destinations, and the host's own services.
    assert f'chain forward {{ iifname "{interface}" jump {chain}; }}' in text
    assert f'chain input {{ iifname "{interface}" jump {chain}; }}' in text
    assert f"table inet {TABLE} {{" in text


def test_an_app_without_rules_drops_everything():
    text = app_ruleset("hello", [])
    assert "accept" not in text.replace("established,related accept", "")
    assert "dport" not in text
    assert "counter drop" in text


def test_the_main_ruleset_replaces_the_table_and_closes_unknown_bridges():
    text = main_ruleset("/etc/streamlit-apps/egress")
    lines = text.splitlines()
    # Created if absent, then deleted and rebuilt in the same transaction: one atomic replacement.
    assert lines[1:3] == [f"table inet {TABLE}", f"delete table inet {TABLE}"]
    assert 'include "/etc/streamlit-apps/egress/*.nft"' in lines
    include = lines.index('include "/etc/streamlit-apps/egress/*.nft"')
    assert 'iifname "sse*" counter drop' in "\n".join(lines[include:])
    assert "priority filter - 10" in text
    with pytest.raises(ValueError, match="not a directory path"):
        main_ruleset('/etc/x"; flush ruleset; "')


def test_dropped_packets_are_read_from_the_counters():
    listing = """table inet secure_streamlit_egress {
	chain app_sse0 {
		ip daddr 198.18.0.10 tcp dport 8080 counter packets 7 bytes 420 accept
		counter packets 3 bytes 180 drop
	}
}"""
    assert dropped_packets(listing) == 3


@pytest.mark.skipif(
    shutil.which("nft") is None or shutil.which("unshare") is None or os.geteuid() != 0,
    reason="needs nft, unshare and root (a network namespace of its own)",
)
def test_the_kernel_accepts_the_rules_and_a_second_load_replaces_them(tmp_path: Path):
    parts = tmp_path / "egress"
    parts.mkdir()
    (parts / "hello.nft").write_text(
        app_ruleset("hello", [Rule("198.18.0.10/32", 8080, "target.lab.test"), Rule("::/0", 443)])
    )
    (parts / "other.nft").write_text(app_ruleset("other", []))
    main = tmp_path / "egress.nft"
    main.write_text(main_ruleset(str(parts)))
    script = f"nft -f {main} && nft -f {main} && nft list table inet {TABLE}"
    listing = subprocess.run(
        ["unshare", "--net", "sh", "-c", script], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    for app in ("hello", "other"):
        assert listing.count(f"jump app_{interface_name(app)}") == 2, listing  # loaded once, not twice
    assert "ip daddr 198.18.0.10 tcp dport 8080" in listing
    assert listing.index(f"jump app_{interface_name('hello')}") < listing.index('iifname "sse*"')


# -- the host itself: refused, not opened (the hardening role's input chain drops what app bridges send)
def test_a_cidr_that_is_one_of_the_host_s_addresses_is_refused_at_validation():
    entries, _ = parse_egress(
        [
            {"cidr": "192.0.2.2", "port": 5432},
            {"cidr": "192.0.2.0/24", "port": 443},  # holds the host: allowed, the host stays closed
            {"cidr": "fd00::2", "port": 8080},
            {"cidr": "198.18.0.10", "port": 8080},
        ]
    )
    errors = host_local_errors(entries, ["192.0.2.2", "172.17.0.1", "fd00::2", "fe80::1%eth0", "junk"])
    assert errors == [
        "egress[0].cidr '192.0.2.2/32' is this host itself: an app may not reach the host's own services (the "
        "host firewall drops what app bridges send to the host, and egress does not open it); run the service "
        "on another host or address",
        "egress[2].cidr 'fd00::2/128' is this host itself: an app may not reach the host's own services (the "
        "host firewall drops what app bridges send to the host, and egress does not open it); run the service "
        "on another host or address",
    ]
    assert host_local_errors(entries, []) == []


def test_a_name_or_address_on_this_host_fails_the_deploy_with_the_reason():
    entries, _ = parse_egress([{"host": "db.lab.test", "port": 5432}])
    mine = {"172.17.0.1"}.__contains__
    with pytest.raises(ValueError, match=r"db.lab.test' resolves to 172.17.0.1, which is this host itself"):
        resolve(entries, lookup({"db.lab.test": ["172.17.0.1"]}), mine)
    single, _ = parse_egress([{"cidr": "172.17.0.1", "port": 5432}])
    with pytest.raises(ValueError, match=r"egress\[0\].cidr '172.17.0.1/32' is this host itself"):
        resolve(single, lookup({}), mine)
    wide, _ = parse_egress([{"cidr": "172.17.0.0/16", "port": 5432}])
    assert resolve(wide, lookup({}), mine) == [Rule("172.17.0.0/16", 5432)]


def test_which_addresses_are_local_is_asked_of_the_kernel():
    assert local_address("127.0.0.1")
    assert not local_address("198.51.100.77")  # TEST-NET-2: on no interface here
    assert not local_address("2001:db8::77")
