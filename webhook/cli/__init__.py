"""`kafka-expose` command line: one entry point, one sub-command per shell around the core.

Each sub-command lives in its own module and is imported only when it runs, so `render` in a Helm
post-renderer does not pay for Flask, gunicorn or the Kubernetes client.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from webhook import __version__

# sub-command -> (module, help). Each module has `add_arguments(parser)` and `run(args) -> int`.
COMMANDS: dict[str, tuple[str, str]] = {
    "render": ("webhook.cli.render", "Helm post-renderer: expose the brokers of manifests on stdin"),
    "explain": ("webhook.cli.explain", "show, per broker, what it will advertise or why it is not exposed"),
    "check": ("webhook.cli.check", "evaluate the policy offline on manifests (exit 1 on violations)"),
    "status": (
        "webhook.cli.status",
        "every broker of every opted-in namespace: exposed how, and what needs a person",
    ),
    "serve": ("webhook.cli.serve", "run the admission webhook server (gunicorn + Flask, TLS)"),
    "controller": ("webhook.cli.controller", "run the per-broker LoadBalancer controller"),
    "certs": ("webhook.cli.certs", "certificate tooling (generate a CA and a serving certificate)"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; only the sub-command `only` (if given) imports its module for its arguments."""
    parser = argparse.ArgumentParser(
        prog="kafka-expose",
        description="Expose every broker of an unmodified Kafka chart through its own internal LoadBalancer.",
    )
    parser.add_argument("--version", action="version", version=f"kafka-expose {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(module=module_name)
        if only is None or name == only:
            importlib.import_module(module_name).add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    chosen = words[0] if words and words[0] in COMMANDS else "-"  # "-": no sub-command module imported
    args = build_parser(only=chosen).parse_args(words)
    module = importlib.import_module(args.module)
    code: int = module.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
