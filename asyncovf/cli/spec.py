"""``asyncovf spec SOURCE``: an appliance's options document as JSON, no vCenter needed."""

from __future__ import annotations

import argparse
import json
import logging

from asyncovf.cli.exits import EXIT_OK, EXIT_USAGE
from asyncovf.cli.groups import SOURCE_HELP, add_debug_options, add_source_limits, source_settings
from asyncovf.cli.output import report_error
from asyncovf.errors import AsyncOvfError
from asyncovf.ovf.source import open_package
from asyncovf.printable import counted, printable_json
from asyncovf.spec import options_document

log = logging.getLogger(__name__)


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "spec", help="print the options document of an appliance (no vCenter needed)",
        description="Print the options document for an appliance as JSON, in govc's "
                    "import.spec format: edit it and pass it to 'import --options' or a "
                    "batch entry's 'options:'.")
    add_debug_options(parser, verbose=False)  # its --verbose says more, not logs more
    add_source_limits(parser)
    parser.add_argument("source", help=SOURCE_HELP)
    parser.add_argument("--verbose", action="store_true",
                        help="add property types and labels, disks, hardware per deployment "
                             "option, EULAs and package facts")
    parser.add_argument("--deployment", help="show the document for this deployment option")
    parser.add_argument("--hidden", action="store_true",
                        help="also list properties the vendor did not mark user-configurable")


async def command(args: argparse.Namespace) -> int:
    """``asyncovf spec SOURCE``: the options document as JSON on stdout."""
    try:
        package = await open_package(args.source, max_descriptor_bytes=args.max_descriptor_size,
                                     http=source_settings(args), measure_compressed=False)
        document = options_document(package.descriptor, package=package, verbose=args.verbose,
                                    deployment=args.deployment, hidden=args.hidden)
    except (AsyncOvfError, ValueError) as exc:
        report_error(exc, args.debug)
        return EXIT_USAGE
    for warning in counted(package.warnings):
        log.warning("%s", warning)
    try:
        signature = package.signature()
    except AsyncOvfError as exc:
        log.warning("%s", exc)
    else:
        if signature is not None:
            if "Package" in document:  # --verbose
                document["Package"]["Signature"] = signature.describe()
            (log.info if signature.valid else log.warning)("%s: %s", args.source,
                                                          signature.describe())
    print(printable_json(json.dumps(document, indent=2, ensure_ascii=False)))
    return EXIT_OK


__all__ = ["add_parser", "command"]
