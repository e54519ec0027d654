"""``asyncovf report RESULTS.json``: a run report's statistics, and charts with matplotlib."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from asyncovf.cli.exits import EXIT_OK, EXIT_USAGE
from asyncovf.cli.groups import add_debug_options
from asyncovf.cli.output import report_error
from asyncovf.errors import AsyncOvfError


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "report", help="draw a run report: timeline, in-flight, throughput, latency, errors",
        description="Read the JSON that 'asyncovf run --report' wrote and draw what a load "
                    "tester wants: every job's phases on a timeline, imports in flight and "
                    "upload throughput over time, p50/p90/p99/max latency per phase, failed "
                    "jobs by kind and, for a --ramp run, median latency per concurrency step. "
                    "Charts need the report extra: pip install 'asyncovf[report]'.")
    add_debug_options(parser, verbose=False)
    parser.add_argument("results", metavar="RESULTS.json", help="a run report")
    parser.add_argument("--html", metavar="FILE", help="one self-contained HTML page")
    parser.add_argument("--png", metavar="FILE", help="all charts in one PNG")
    parser.add_argument("--json", metavar="FILE",
                        help="the computed statistics as JSON ('-' for stdout)")


def command(args: argparse.Namespace) -> int:
    """``asyncovf report RESULTS.json``: statistics always, pictures if matplotlib is there."""
    from asyncovf.loadreport import analysis

    if not (args.html or args.png or args.json):
        args.json = "-"
    try:
        report = analysis.load_run_report(args.results)
        if args.json:
            text = json.dumps(analysis.statistics(report), indent=2) + "\n"
            if args.json == "-":
                sys.stdout.write(text)
            else:
                Path(args.json).write_text(text, encoding="utf-8")
        if args.html or args.png:
            from asyncovf.loadreport import charts

            if args.html:
                Path(args.html).write_text(charts.render_html(report), encoding="utf-8")
                print(f"report: {args.html}", file=sys.stderr)
            if args.png:
                charts.write_png(report, args.png)
                print(f"report: {args.png}", file=sys.stderr)
    except BrokenPipeError:
        raise  # stdout's reader went away: main() ends quietly, not as a bad input
    except (AsyncOvfError, OSError) as exc:
        report_error(exc, args.debug)
        return EXIT_USAGE
    return EXIT_OK


__all__ = ["add_parser", "command"]
