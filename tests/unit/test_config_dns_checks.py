"""Config: a probe's ``dns_checks``, ``dns_interval`` and own ``dns:`` (issue 10, DNS checks).

Every mistake is reported at its place, with the words the loader uses
elsewhere (did-you-mean for a near miss), and a good probe becomes the
engine's :class:`DnsChecks` with its domains taken from ``to`` and ``from``.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema  # type: ignore[import-untyped]
import pytest
import trustme
import yaml

from smtp_probe.config import parse_config
from smtp_probe.config.errors import ConfigError
from smtp_probe.config.load import validate
from smtp_probe.config.schema import schema_text
from smtp_probe.probe.spec import (
    DEFAULT_DNS_INTERVAL,
    DnsCheck,
    DnsChecks,
    DnsSettings,
    TlsSettings,
)

_HEAD = """\
dns: {nameservers: ["127.0.0.1:5353"], timeout: 3s}
smtp_servers:
  relay: {host: 127.0.0.1, port: 25, tls: none}
probes:
  - name: dns
    smtp: relay
    from: probe@Sender.example
    to: probe@rcpt.example
"""
_CHECKS = ", ".join(check.value for check in DnsCheck)


def _config(extra: str, *, head: str = _HEAD, source: Path | None = None) -> str:
    return head + "".join(f"    {line}\n" for line in extra.splitlines())


def _errors(extra: str, source: Path | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(_config(extra), source=source)
    return list(caught.value.errors)


def test_a_list_of_names_gets_every_default_and_the_domains_of_to_and_from() -> None:
    config = parse_config(_config("dns_checks: [spf, mx, fcrdns]"))
    spec = config.probes[0].spec
    assert spec.dns_checks == DnsChecks(
        checks=(DnsCheck.MX, DnsCheck.SPF, DnsCheck.FCRDNS),
        recipient_domain="rcpt.example",
        sender_domain="sender.example",
        interval=DEFAULT_DNS_INTERVAL,
    )
    assert spec.dns == DnsSettings((("127.0.0.1", 5353),), 3.0)


def test_a_mapping_sets_each_checks_options_and_the_probe_its_interval_and_resolver(
    tmp_path: Path,
) -> None:
    ca = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca))
    text = _config(
        """dns_interval: 30m
dns: {nameservers: ["127.0.0.2"]}
dns_checks:
  sending_ip: [127.0.0.7, "::1"]
  ca_file: ca.pem
  mx: {hosts: [MX1.rcpt.example., mx2.rcpt.example]}
  spf: {}
  dmarc: {policy: quarantine}
  mta_sts: {mode: testing}
  tls_rpt:
  dnsbl: {zones: [bl.example.test]}
  fcrdns: {}"""
    )
    spec = parse_config(text, source=tmp_path / "smtp-probe.yml").probes[0].spec
    assert spec.dns_checks == DnsChecks(
        checks=tuple(DnsCheck),
        recipient_domain="rcpt.example",
        sender_domain="sender.example",
        interval=1800.0,
        sending_ips=("127.0.0.7", "::1"),
        mx_hosts=("mx1.rcpt.example", "mx2.rcpt.example"),
        dmarc_policy="quarantine",
        mta_sts_mode="testing",
        dnsbl_zones=("bl.example.test",),
        tls_settings=TlsSettings(ca_file=ca),
    )
    assert spec.dns == DnsSettings((("127.0.0.2", 53),))


def test_one_sending_ip_may_be_written_without_a_list() -> None:
    spec = parse_config(_config("dns_checks: {sending_ip: 127.0.0.9, spf: {}}")).probes[0].spec
    assert spec.dns_checks is not None
    assert spec.dns_checks.sending_ips == ("127.0.0.9",)


def test_defaults_dns_interval_applies_to_every_probe_without_its_own() -> None:
    head = "defaults: {dns_interval: 5m}\n" + _HEAD
    text = _config("dns_checks: [mx]", head=head) + (
        "  - {name: own, smtp: relay, from: a@b.example, to: c@d.example, dns_interval: 1h, "
        "dns_checks: [spf]}\n"
        "  - {name: none, smtp: relay, from: a@b.example, to: c@d.example}\n"
    )
    probes = parse_config(text).probes
    intervals = [p.spec.dns_checks.interval if p.spec.dns_checks else None for p in probes]
    assert intervals == [300.0, 3600.0, None]


def test_a_probe_without_its_own_dns_uses_the_top_level_one_and_none_means_the_systems() -> None:
    text = _HEAD.replace('dns: {nameservers: ["127.0.0.1:5353"], timeout: 3s}\n', "")
    assert parse_config(text).probes[0].spec.dns == DnsSettings()


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "dns_checks: [mx, sfp]",
            [
                f"<config>:9:22: probes[0].dns_checks[1]: unknown check (did you mean 'spf'?); "
                f"expected one of {_CHECKS}"
            ],
        ),
        (
            "dns_checks: [mx, mx]",
            ["<config>:9:22: probes[0].dns_checks[1]: listed twice"],
        ),
        (
            "dns_checks: [dnsbl]",
            [
                "<config>:9:18: probes[0].dns_checks[0]: dnsbl needs zones, like dnsbl: "
                "{zones: [zen.example.org]} (none by default: public blocklists have terms of use)"
            ],
        ),
        (
            "dns_checks: []",
            [f"<config>:9:17: probes[0].dns_checks: name at least one check: {_CHECKS}"],
        ),
        (
            "dns_checks: {sending_ip: 127.0.0.1}",
            [f"<config>:9:17: probes[0].dns_checks: name at least one check: {_CHECKS}"],
        ),
        (
            "dns_checks: mx",
            [
                "<config>:9:17: probes[0].dns_checks: expected a list of check names, "
                "or a mapping of check name to options, got a string"
            ],
        ),
        (
            "dns_checks: {dmark: {}}",
            [
                "<config>:9:25: probes[0].dns_checks.dmark: unknown check (did you mean "
                f"'dmarc'?); expected one of {_CHECKS}, or sending_ip or ca_file"
            ],
        ),
        (
            "dns_checks: {sending_ip: [127.0.0.1, 10.0.0, 7], spf: {}}",
            [
                "<config>:9:42: probes[0].dns_checks.sending_ip[1]: expected an IP address "
                "like 203.0.113.7 or 2001:db8::7",
                "<config>:9:50: probes[0].dns_checks.sending_ip[2]: expected a string, "
                "got an integer",
            ],
        ),
        (
            "dns_checks: {sending_ip: mail.example, spf: {}}",
            [
                "<config>:9:30: probes[0].dns_checks.sending_ip: expected an IP address "
                "like 203.0.113.7 or 2001:db8::7"
            ],
        ),
        (
            "dns_checks: {dmarc: {policy: quarantin}}",
            [
                "<config>:9:34: probes[0].dns_checks.dmarc.policy: expected one of none, "
                "quarantine, reject (did you mean 'quarantine'?)"
            ],
        ),
        (
            "dns_checks: {mta_sts: {mode: enforcing}}",
            [
                "<config>:9:34: probes[0].dns_checks.mta_sts.mode: expected one of none, "
                "testing, enforce (did you mean 'enforce'?)"
            ],
        ),
        (
            "dns_checks: {dnsbl: {}}",
            [
                "<config>:9:25: probes[0].dns_checks.dnsbl: dnsbl needs zones, like dnsbl: "
                "{zones: [zen.example.org]} (none by default: public blocklists have terms of use)"
            ],
        ),
        (
            "dns_checks: {dnsbl: {zones: []}}",
            ["<config>:9:33: probes[0].dns_checks.dnsbl.zones: must not be empty"],
        ),
        (
            "dns_checks: {dnsbl: {zones: [127.0.0.2]}}",
            [
                "<config>:9:34: probes[0].dns_checks.dnsbl.zones[0]: expected a DNS name like "
                "zen.example.org, not an IP address"
            ],
        ),
        (
            "dns_checks: {mx: {host: [a.example]}}",
            [
                "<config>:9:29: probes[0].dns_checks.mx.host: unknown option (did you mean "
                "'hosts'?); mx takes hosts"
            ],
        ),
        (
            "dns_checks: {spf: {policy: reject}}",
            [
                "<config>:9:32: probes[0].dns_checks.spf.policy: unknown option; spf takes "
                "no options (write spf: {})"
            ],
        ),
        (
            "dns_checks: {spf: [a]}",
            [
                "<config>:9:23: probes[0].dns_checks.spf: expected a mapping of options "
                "({} for the defaults), got a list"
            ],
        ),
        (
            "dns_checks: {spf: {}, ca_file: no-such.pem}",
            [
                "<config>:9:36: probes[0].dns_checks.ca_file: CA file "
                "{dir}/no-such.pem does not exist"
            ],
        ),
        (
            "dns_interval: 5m",
            [
                "<config>:9:19: probes[0].dns_interval: dns_interval needs dns_checks: "
                "it is how often they run"
            ],
        ),
        (
            "dns_interval: 0s\ndns_checks: [mx]",
            ["<config>:9:19: probes[0].dns_interval: a duration must be longer than zero"],
        ),
        (
            "dns: {nameservers: [resolver.example]}\ndns_checks: [mx]",
            [
                "<config>:9:25: probes[0].dns.nameservers[0]: 'resolver.example' is not an IP "
                "address: a nameserver is IP, IP:PORT or [IPV6]:PORT"
            ],
        ),
    ],
)
def test_each_mistake_is_reported_where_it_is_written(extra: str, expected: list[str]) -> None:
    assert _errors(extra) == [line.replace("{dir}", str(Path.cwd())) for line in expected]


def test_a_bad_defaults_dns_interval_is_reported_there() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("defaults: {dns_interval: 15}\n" + _config("dns_checks: [mx]"))
    assert list(caught.value.errors) == [
        "<config>:1:26: defaults.dns_interval: a duration needs a unit: 500ms, 30s, 5m or 1h"
    ]


def test_validate_lists_each_probes_dns_checks_and_their_interval(tmp_path: Path) -> None:
    path = tmp_path / "smtp-probe.yml"
    path.write_text(_config("dns_interval: 10m\ndns_checks: [mx, spf]"))
    assert validate(path).splitlines()[1] == (
        "  dns: relay -> (no mailbox), probe@Sender.example -> probe@rcpt.example; "
        "dns checks mx,spf every 600s"
    )


@pytest.mark.parametrize(
    ("extra", "valid"),
    [
        ("dns_checks: [mx, spf]", True),
        ("dns_checks: {dnsbl: {zones: [bl.example]}, sending_ip: 127.0.0.1}", True),
        ("dns_checks: {mx: {hosts: [a.example]}, dmarc: {policy: reject}, tls_rpt: null}", True),
        ("dns_checks: [dnsbl]", False),
        ("dns_checks: {dnsbl: {}}", False),
        ("dns_checks: {dmarc: {policy: strict}}", False),
        ("dns_checks: {sending_ip: 127.0.0.1}", False),
        ("dns_checks: [mx, mx]", False),
        ("dns_interval: 5m", False),
    ],
)
def test_the_json_schema_agrees_with_the_loader(extra: str, valid: bool) -> None:
    text = _config(extra)
    schema = json.loads(schema_text())
    validator = jsonschema.Draft202012Validator(schema)
    assert validator.is_valid(yaml.safe_load(text)) is valid
    try:
        parse_config(text)
    except ConfigError:
        loaded = False
    else:
        loaded = True
    assert loaded is valid
