"""``asyncovf report RESULTS.json``: a run report's summary as text, and its statistics as
JSON and its charts (matplotlib) as HTML or PNG files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from asyncovf.cli.exits import EXIT_USAGE, exit_status
from asyncovf.cli.groups import add_debug_options, add_threshold_option
from asyncovf.cli.output import report_error, report_missed_thresholds
from asyncovf.errors import AsyncOvfError


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "report", help="summarise a run report: how fast, where it bends, what failed",
        description="Read the JSON that 'asyncovf run --report' wrote and answer what a load "
                    "tester asks: how fast (imports/s, p50/p90/p95/p99/max latency per job "
                    "and per phase), where it bends (the knee of a --ramp run) and what "
                    "failed (errors by kind, with sample messages), with the run's metadata. "
                    "Prints a text summary; --html, --png and --json write files. Charts "
                    "need the report extra: pip install 'asyncovf[report]'.")
    add_debug_options(parser, verbose=False)
    parser.add_argument("results", metavar="RESULTS.json", nargs="+",
                        help="a run report, or the reports of one batch's shards (merged "
                             "into one run, aligned on their clocks)")
    add_threshold_option(parser, what="the report")
    parser.add_argument("--html", metavar="FILE", help="one self-contained HTML page")
    parser.add_argument("--png", metavar="FILE", help="all charts in one PNG")
    parser.add_argument("--json", metavar="FILE",
                        help="the computed statistics as JSON ('-' for stdout)")


def command(args: argparse.Namespace) -> int:
    """``asyncovf report RESULTS.json…``: the text summary unless a file is asked for; 3 when
    a ``--threshold`` fails."""
    from asyncovf.loadreport import analysis, merge, summary

    try:
        report = merge.merge_reports([analysis.load_run_report(path) for path in args.results],
                                     args.results)
        if not (args.html or args.png or args.json):
            sys.stdout.write(summary.text_summary(report))
        if args.json:
            text = json.dumps(summary.statistics(report), indent=2) + "\n"
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
    return exit_status(threshold=report_missed_thresholds(report, args.threshold))


__all__ = ["add_parser", "command"]
