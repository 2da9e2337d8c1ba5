"""Controlled egress: an app's allowed destinations, their addresses, and the nftables rules that open them.

An app without `egress` stays on the internal network (no route out). An app with it runs alone on a
bridge of its own (`network_name`, interface `interface_name`), not internal; the platform's table
`inet secure_streamlit_egress` accepts from that interface only the destinations listed (TCP, daddr and
dport) and logs and drops everything else, in the forward hook (other hosts, other apps' networks) and
the input hook (the host's own services). Names are resolved on the host at deploy time; the container
gets them as /etc/hosts entries and has no resolver it can reach.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import socket
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

TABLE = "secure_streamlit_egress"
INTERFACE_PREFIX = "sse"  # + 12 hex digits: 15 characters, the kernel's limit for an interface name
NETWORK_PREFIX = "streamlit-egress-"
LOG_PREFIX = "streamlit-egress drop "
ENTRY_KEYS = ("host", "cidr", "port", "allow_any")
HOST_NAME_RE = re.compile(
    r"(?=.{1,253}\Z)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
)
CIDR_RE = re.compile(r"[0-9a-fA-F:.]{2,45}(?:/[0-9]{1,3})?")
APP_NAME_RE = re.compile(r"[a-z](?:[a-z0-9-]{0,39}[a-z0-9])?")
MAX_ENTRIES = 64
# Networks wider than these need allow_any too: 0.0.0.0/1 + 128.0.0.0/1 is 0.0.0.0/0 by another name.
WIDE_PREFIX = {4: 8, 6: 16}
FORBIDDEN_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
# Why a destination on the host itself is refused rather than opened: the hardening role's input chain
# (table inet secure_streamlit, policy drop) sees every packet an app bridge sends to the host after this
# table has accepted it, and an accept here does not bind that table.
HOST_LOCAL_REASON = (
    "is this host itself: an app may not reach the host's own services (the host firewall drops what app "
    "bridges send to the host, and egress does not open it); run the service on another host or address"
)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def entry_errors(index: int, raw: object) -> tuple[dict[str, Any] | None, list[str]]:
    """One `egress` item as the normalised {host, port, allow_any} or {cidr, port, allow_any}, or the
    reasons it is refused (each starting `egress[i]`)."""
    where = f"egress[{index}]"
    if not isinstance(raw, Mapping):
        return None, [f"{where} must be a mapping {{host, port}} or {{cidr, port}}, not {type(raw).__name__}"]
    errors = [
        f"{where}: unknown key {_shown(key)} (known: {', '.join(ENTRY_KEYS)})" for key in raw if key not in ENTRY_KEYS
    ]
    host, cidr, port = raw.get("host"), raw.get("cidr"), raw.get("port")
    allow_any = raw.get("allow_any", False)
    out: dict[str, Any] = {}
    if not isinstance(allow_any, bool):
        errors.append(f"{where}.allow_any must be true or false, not {_shown(allow_any)}")
        allow_any = False
    if (host is None) == (cidr is None):
        errors.append(f"{where} needs exactly one of host (a host name) or cidr (an address or network)")
    elif host is not None:
        if not isinstance(host, str) or not HOST_NAME_RE.fullmatch(host.lower()):
            errors.append(f"{where}.host {_shown(host)} is not a host name (fullmatch {HOST_NAME_RE.pattern})")
        elif host.lower() in FORBIDDEN_NAMES:
            errors.append(f"{where}.host {_shown(host)} is the container itself, not a destination")
        elif host.rsplit(".", 1)[-1].isdigit():
            errors.append(f"{where}.host {_shown(host)} looks like an address: write it as cidr")
        else:
            out["host"] = host.lower()
            out["allow_any"] = False
        if allow_any:
            errors.append(f"{where}.allow_any applies only to cidr 0.0.0.0/0 or ::/0")
    else:
        network = None
        if not isinstance(cidr, str) or not CIDR_RE.fullmatch(cidr):
            errors.append(f"{where}.cidr {_shown(cidr)} is not an address or a network such as 10.20.0.0/16")
        else:
            try:
                network = ipaddress.ip_network(cidr, strict=True)
            except ValueError as exc:
                errors.append(f"{where}.cidr {_shown(cidr)} is not a network ({exc})")
        if network is not None:
            wide = network.prefixlen < WIDE_PREFIX[network.version]
            if wide and not allow_any:
                errors.append(
                    f"{where}.cidr {_shown(cidr)} opens every destination or most of them: refused unless the "
                    "entry sets allow_any: true"
                )
            elif not wide and allow_any:
                errors.append(
                    f"{where}.allow_any applies only to networks wider than /8 (IPv4) or /16 (IPv6), "
                    f"such as 0.0.0.0/0, not {_shown(cidr)}"
                )
            elif network.is_loopback or (network.is_unspecified and network.prefixlen != 0):
                errors.append(f"{where}.cidr {_shown(cidr)} is the container itself, not a destination")
            else:
                out["cidr"] = str(network)
                out["allow_any"] = allow_any
    if port is None:
        errors.append(f"{where}.port is missing: every destination needs a TCP port (1-65535)")
    elif not _is_int(port) or not 1 <= port <= 65535:
        errors.append(f"{where}.port {_shown(port)} must be a whole number within 1..65535")
    else:
        out["port"] = port
    out = dict(sorted(out.items()))
    return (None, errors) if errors else (out, [])


def parse_egress(value: object) -> tuple[list[dict[str, Any]], list[str]]:
    """The `egress` key of an app entry: None means none; else a list of destinations, each refused with
    its reason. Returns the normalised list and the errors (messages without the entry's own prefix)."""
    if value is None:
        return [], []
    if not isinstance(value, list):
        return [], [f"egress must be a list of {{host, port}} or {{cidr, port}}, not {type(value).__name__}"]
    if len(value) > MAX_ENTRIES:
        return [], [f"egress has {len(value)} destinations; at most {MAX_ENTRIES}"]
    out: list[dict[str, Any]] = []
    errors: list[str] = []
    seen: dict[tuple[str, str, int], int] = {}
    for index, raw in enumerate(value):
        entry, problems = entry_errors(index, raw)
        errors.extend(problems)
        if entry is None:
            continue
        key = (entry.get("host", ""), entry.get("cidr", ""), entry["port"])
        if key in seen:
            errors.append(f"egress[{index}] repeats egress[{seen[key]}]")
            continue
        seen[key] = index
        out.append(entry)
    return (out, errors) if not errors else ([], errors)


def egress_problem(value: object) -> str | None:
    """Why a normalised egress list (read back from JSON) is wrong, or None."""
    entries, errors = parse_egress(value)
    if errors:
        return errors[0]
    return None if entries == value else "is not in its normalised form"


def interface_name(app: str) -> str:
    """The bridge interface of the app's own network: derived from the name, at most 15 characters."""
    if not APP_NAME_RE.fullmatch(app):
        raise ValueError(f"not an app name: {_shown(app)}")
    return INTERFACE_PREFIX + hashlib.sha256(app.encode()).hexdigest()[:12]


def network_name(app: str) -> str:
    if not APP_NAME_RE.fullmatch(app):
        raise ValueError(f"not an app name: {_shown(app)}")
    return NETWORK_PREFIX + app


@dataclass(frozen=True)
class Rule:
    """One opened destination: a network (a single address for a host name) and a TCP port."""

    network: str  # "198.18.0.10/32", "10.20.0.0/16", "::/0"
    port: int
    host: str = ""  # the name it was resolved from ("" for a cidr)

    @property
    def family(self) -> str:
        return "ip6" if ipaddress.ip_network(self.network).version == 6 else "ip"

    @property
    def address(self) -> str:
        return str(ipaddress.ip_network(self.network).network_address)


Lookup = Callable[[str], Sequence[str]]


def resolve(
    entries: Sequence[Mapping[str, Any]], lookup: Lookup, is_local: Callable[[str], bool] = lambda _address: False
) -> list[Rule]:
    """The rules of an app's normalised egress list. A host name becomes its first IPv4 address (sorted),
    the one the container's /etc/hosts gets; ValueError names an entry that cannot be resolved, that
    resolves to the container's own loopback, or that is an address of this host (`is_local`)."""
    rules: list[Rule] = []
    for index, entry in enumerate(entries):
        if entry.get("cidr"):
            network = ipaddress.ip_network(str(entry["cidr"]))
            if network.num_addresses == 1 and is_local(str(network.network_address)):
                raise ValueError(f"egress[{index}].cidr {entry['cidr']!r} {HOST_LOCAL_REASON}")
            rules.append(Rule(str(entry["cidr"]), int(entry["port"])))
            continue
        host = str(entry["host"])
        addresses = sorted(
            {a for a in lookup(host) if ipaddress.ip_address(a).version == 4},
            key=ipaddress.ip_address,
        )
        if not addresses:
            raise ValueError(f"egress[{index}].host {host!r} has no IPv4 address on this host")
        address = ipaddress.ip_address(addresses[0])
        if address.is_loopback or address.is_unspecified:
            raise ValueError(f"egress[{index}].host {host!r} resolves to {address}, the container itself")
        if is_local(str(address)):
            raise ValueError(f"egress[{index}].host {host!r} resolves to {address}, which {HOST_LOCAL_REASON}")
        rules.append(Rule(f"{address}/32", int(entry["port"]), host))
    return rules


def host_local_errors(entries: Sequence[Mapping[str, Any]], host_addresses: Collection[str]) -> list[str]:
    """Messages for the normalised entries whose cidr is a single address of this host (`host_addresses`,
    e.g. Ansible's all_ipv4_addresses and all_ipv6_addresses). A wider network that holds the host is
    allowed: the host itself stays closed to the app."""
    own = set()
    for text in host_addresses:
        try:
            own.add(ipaddress.ip_address(str(text).split("%", 1)[0]))
        except ValueError:
            continue
    errors = []
    for index, entry in enumerate(entries):
        cidr = entry.get("cidr")
        if not cidr:
            continue
        network = ipaddress.ip_network(str(cidr))
        if network.num_addresses == 1 and network.network_address in own:
            errors.append(f"egress[{index}].cidr {_shown(cidr)} {HOST_LOCAL_REASON}")
    return errors


def local_address(address: str) -> bool:
    """Whether `address` is assigned to this host (a bind to it succeeds). False where any address binds
    (net.ipv4.ip_nonlocal_bind): then this cannot tell."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sysctl = f"/proc/sys/net/{'ipv6' if family == socket.AF_INET6 else 'ipv4'}/ip_nonlocal_bind"
    try:
        with open(sysctl, encoding="ascii") as handle:
            if handle.read().strip() != "0":
                return False
    except OSError:
        pass
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((address, 0))
        except OSError:
            return False
    return True


def extra_hosts(rules: Sequence[Rule]) -> dict[str, str]:
    """Name -> address for the container's /etc/hosts (Docker's extra_hosts)."""
    return {rule.host: rule.address for rule in rules if rule.host}


def _comment(text: str) -> str:
    # The names are host names (letters, digits, "-", "."): nothing to escape in a quoted nft string.
    return text if HOST_NAME_RE.fullmatch(text) else ""


def app_ruleset(app: str, rules: Sequence[Rule]) -> str:
    """The app's part of the table: its chain (established replies, the listed destinations, then log and
    drop) and the jumps from the forward and input hooks for its bridge. Loaded by `main_ruleset`'s
    include, after the base chains and before their closing catch-all."""
    interface = interface_name(app)
    chain = f"app_{interface}"
    lines = [
        f"# Egress of app {app} (written by the deploy engine at each deploy; edits are overwritten).",
        f"table inet {TABLE} {{",
        f"\tchain {chain} {{",
        "\t\tct state established,related accept",
        "\t\tct state invalid drop",
    ]
    for rule in rules:
        match = f"{rule.family} daddr {rule.network}" if ipaddress.ip_network(rule.network).prefixlen else ""
        if not match:
            # 0.0.0.0/0 or ::/0 (allow_any): every address of that family.
            match = "meta nfproto ipv6" if rule.family == "ip6" else "meta nfproto ipv4"
        comment = f' comment "{_comment(rule.host)}"' if _comment(rule.host) else ""
        lines.append(f"\t\t{match} tcp dport {rule.port} counter accept{comment}")
    lines += [
        f'\t\tlimit rate 10/second burst 20 packets log prefix "{LOG_PREFIX}{app}: " level warn',
        "\t\tcounter drop",
        "\t}",
        f'\tchain forward {{ iifname "{interface}" jump {chain}; }}',
        f'\tchain input {{ iifname "{interface}" jump {chain}; }}',
        "}",
        "",
    ]
    return "\n".join(lines)


def main_ruleset(include_dir: str) -> str:
    """The whole table, replaced atomically by one `nft -f`: the hooks, every app's part (the include),
    and a closing drop for any egress bridge without a part of its own (fail closed)."""
    if not re.fullmatch(r"(/[A-Za-z0-9_.-]+)+", include_dir):
        raise ValueError(f"not a directory path: {_shown(include_dir)}")
    return "\n".join(
        [
            "# secure_streamlit.hosting: controlled egress of the apps (written by the deploy engine).",
            f"table inet {TABLE}",
            f"delete table inet {TABLE}",
            f"table inet {TABLE} {{",
            "\t# Before Docker's own filter rules (priority filter): a drop here is final.",
            "\tchain forward { type filter hook forward priority filter - 10; policy accept; }",
            "\tchain input { type filter hook input priority filter - 10; policy accept; }",
            "}",
            f'include "{include_dir}/*.nft"',
            f"table inet {TABLE} {{",
            f'\tchain forward {{ iifname "{INTERFACE_PREFIX}*" counter drop; }}',
            f'\tchain input {{ iifname "{INTERFACE_PREFIX}*" counter drop; }}',
            "}",
            "",
        ]
    )


_COUNTER_RE = re.compile(r"counter packets (\d+) bytes \d+ drop")


def dropped_packets(chain_listing: str) -> int:
    """The packets an app chain dropped, from `nft list chain inet secure_streamlit_egress app_...`."""
    return sum(int(m.group(1)) for m in _COUNTER_RE.finditer(chain_listing))
