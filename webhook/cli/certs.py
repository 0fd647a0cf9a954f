"""`kafka-expose certs generate`: a CA and a serving certificate for the webhook Service, as files.

Refuses to overwrite files already in --out without --force (a CA replaced by accident breaks every
certificate it signed) and refuses a --ca-cert that is not a CA.
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import sys
from pathlib import Path

from webhook.tls.primitives import GENERATED_FILES, generate, is_ca, key_matches


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="certs_command", required=True, metavar="ACTION")
    gen = actions.add_parser(
        "generate",
        help="write a CA and a serving certificate for the webhook Service",
        description="Write ca.crt, ca.key, tls.crt and tls.key (keys mode 0600) into --out. The serving "
        "certificate names <svc>, <svc>.<ns>, <svc>.<ns>.svc and <svc>.<ns>.svc.<cluster-domain>.",
    )
    gen.add_argument("--service", required=True, help="the webhook Service's name")
    gen.add_argument("--namespace", required=True, help="the webhook Service's namespace")
    gen.add_argument("--out", required=True, type=Path, help="directory to write the files into")
    gen.add_argument(
        "--ip", action="append", default=[], metavar="IP", help="add an IP address SAN (repeatable)"
    )
    gen.add_argument(
        "--dns", action="append", default=[], metavar="NAME", help="add a DNS name SAN (repeatable)"
    )
    gen.add_argument("--days", type=int, default=365, help="serving certificate validity (default 365)")
    gen.add_argument("--ca-days", type=int, default=None, help="CA validity (default max(days, 3650))")
    gen.add_argument("--cluster-domain", default="cluster.local", help="default cluster.local")
    gen.add_argument("--ca-cert", type=Path, help="sign with this existing CA certificate (with --ca-key)")
    gen.add_argument("--ca-key", type=Path, help="the existing CA's private key (with --ca-cert)")
    gen.add_argument(
        "--force", action="store_true", help="overwrite files already in --out (a CA there is lost)"
    )


def run(args: argparse.Namespace) -> int:
    if args.certs_command != "generate":  # pragma: no cover - argparse only allows generate
        return 2
    if (args.ca_cert is None) != (args.ca_key is None):
        print("kafka-expose certs generate: --ca-cert and --ca-key go together", file=sys.stderr)
        return 2
    if args.days <= 0 or (args.ca_days is not None and args.ca_days <= 0):
        print("kafka-expose certs generate: --days and --ca-days must be positive", file=sys.stderr)
        return 2
    existing = [name for name in GENERATED_FILES if (args.out / name).exists()]
    if existing and not args.force:
        print(
            f"kafka-expose certs generate: {args.out} already holds {', '.join(existing)}; nothing "
            "written (--force overwrites; a CA overwritten breaks every certificate it signed)",
            file=sys.stderr,
        )
        return 1
    try:
        for ip in args.ip:
            ipaddress.ip_address(ip)
        ca = (args.ca_cert.read_bytes(), args.ca_key.read_bytes()) if args.ca_cert else None
        if ca is not None and not is_ca(ca[0]):
            print(
                f"kafka-expose certs generate: {args.ca_cert} is not a CA certificate (BasicConstraints "
                "CA:TRUE with keyCertSign); nothing written",
                file=sys.stderr,
            )
            return 1
        if ca is not None and not key_matches(ca[0], ca[1]):
            print(
                f"kafka-expose certs generate: {args.ca_key} is not the key of {args.ca_cert}",
                file=sys.stderr,
            )
            return 1
        written = generate(
            args.out,
            args.service,
            args.namespace,
            ips=args.ip,
            extra_dns=args.dns,
            days=args.days,
            ca_days=args.ca_days,
            ca=ca,
            cluster_domain=args.cluster_domain,
        )
    except (OSError, ValueError) as err:
        print(f"kafka-expose certs generate: {err}", file=sys.stderr)
        return 1
    for name in GENERATED_FILES:
        if name in written:
            print(f"wrote {written[name]}")
    bundle = base64.b64encode(written["ca.crt"].read_bytes()).decode()
    print(f"caBundle: {bundle}")
    return 0
