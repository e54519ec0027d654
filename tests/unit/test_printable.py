"""Untrusted text shown escaped: one line, and no terminal control."""

from __future__ import annotations

import logging

import pytest

from asyncovf.engine.batch import JobResult, JobStatus
from asyncovf.engine.plan import JobSpec
from asyncovf.printable import PrintableFormatter, printable
from asyncovf.report import summary_table
from asyncovf.vsphere.inventory import PlacementRequest


@pytest.mark.parametrize(("text", "shown"), [
    ("web-01", "web-01"),
    ("a\nb: imported vm-1", "a\\nb: imported vm-1"),  # a forged line
    ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),  # colours
    ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),  # OSC: the window title
    ("\x9b2J", "\\x9b2J"),  # C1 CSI: clear the screen
    ("file\u202egpj.exe", "file\\u202egpj.exe"),  # right-to-left override
    ("tab\there\r", "tab\\there\\r"),
    ("zero\u200bwidth", "zero\\u200bwidth"),
    ("line\u2028sep", "line\\u2028sep"),
    ("café 日本 ✓ a\\b", "café 日本 ✓ a\\b"),  # what is printable stays as it is
    ("non\u00a0breaking", "non\u00a0breaking"),
])
def test_unsafe_characters_are_escaped_and_the_rest_kept(text: str, shown: str) -> None:
    assert printable(text) == shown
    assert "\n" not in printable(text) and "\x1b" not in printable(text)


def test_the_summary_shows_one_line_per_job_whatever_its_name_and_error() -> None:
    spec = JobSpec(index=0, name="a\nb: imported vm-1", source="/a.ova",
                   placement=PlacementRequest(), origin="rows.csv:2")
    result = JobResult(spec)
    result.status, result.error = JobStatus.FAILED, "vCenter says:\n\x1b[2Jok"
    lines = summary_table([result]).splitlines()
    assert len(lines) == 2  # the header and the job
    assert "a\\nb: imported vm-1" in lines[1] and "\\n\\x1b[2Jok" in lines[1]


def test_log_lines_stay_one_line() -> None:
    record = logging.LogRecord("asyncovf", logging.WARNING, __file__, 1, "%s: %s", (
        "web\n01", "network \x1b]8;;http://x\x07"), None)
    line = PrintableFormatter("asyncovf: %(levelname)s: %(message)s").format(record)
    assert line == "asyncovf: WARNING: web\\n01: network \\x1b]8;;http://x\\x07"


def test_json_keeps_its_meaning_and_loses_its_terminal_control() -> None:
    import json

    from asyncovf.printable import printable_json

    document = {"Annotation": "a\x9b2J\u202eb\U000e0001 é", "Name": "x\ny"}
    text = printable_json(json.dumps(document, indent=2, ensure_ascii=False))
    assert json.loads(text) == document  # the same JSON
    assert all(ch not in text for ch in "\x9b\u202e\U000e0001")
    assert "é" in text and text.count("\n") == 3  # its own indentation stays


def test_a_vm_name_with_control_characters_is_refused() -> None:
    from asyncovf.engine.plan import check_vm_name

    with pytest.raises(ValueError, match=r"^'a\\nb' holds control characters"):
        check_vm_name("a\nb")
    check_vm_name("web-01 é")  # printable text is fine
