"""The ``asyncovf`` parser: the top-level options, then each command's, from its module."""

from __future__ import annotations

import argparse

from asyncovf.cli import cleanup, import_, report, run, spec
from asyncovf.cli.groups import add_debug_options
from asyncovf.version import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asyncovf",
        description="Import OVF/OVA appliances into VMware vCenter, one or hundreds at a time.",
    )
    add_debug_options(parser)
    parser.add_argument("--version", action="version", version=f"asyncovf {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # In the order --help lists them.
    import_.add_parser(commands)
    spec.add_parser(commands)
    run.add_parser(commands)
    report.add_parser(commands)
    cleanup.add_parser(commands)
    return parser


__all__ = ["build_parser"]
