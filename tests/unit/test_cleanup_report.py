"""Reading run reports for ``asyncovf cleanup``: only imported VMs, and nothing on a misread."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from asyncovf.cli.cleanup import summary
from asyncovf.engine.cleaner import CleanupTarget, RemovalResult, RemovalStatus, same_name
from asyncovf.errors import InputError
from asyncovf.report import parse_report, read_report, read_reports


def report(*jobs: dict[str, Any], version: Any = 1) -> dict[str, Any]:
    return {"version": version, "run": {}, "jobs": list(jobs), "totals": {}}


def job(name: str, status: str = "imported", vm: Any = "vm-1", **extra: Any) -> dict[str, Any]:
    return {"name": name, "status": status, "vm": vm, **extra}


def test_only_imported_jobs_are_targets_and_the_others_are_counted() -> None:
    parsed = parse_report(report(job("a", vm="vm-1"), job("b", "skipped", vm="vm-2"),
                                 job("c", "failed", vm=None), job("d", "aborted", vm="vm-4"),
                                 job("e", vm="vm-5")), file="r.json")
    assert parsed.targets == (CleanupTarget("vm-1", "a", "r.json: jobs[0] (a)"),
                              CleanupTarget("vm-5", "e", "r.json: jobs[4] (e)"))
    assert parsed.left_alone == 3


def test_skipped_jobs_are_targets_only_when_the_operator_says_so() -> None:
    # A restarted shard's report calls skipped what its killed pod had finished.
    document = report(job("a", vm="vm-1"), job("b", "skipped", vm="vm-2"),
                      job("c", "failed", vm=None))
    parsed = parse_report(document, file="r.json", include_skipped=True)
    assert parsed.targets == (CleanupTarget("vm-1", "a", "r.json: jobs[0] (a)"),
                              CleanupTarget("vm-2", "b", "r.json: jobs[1] (b)"))
    assert parsed.left_alone == 1
    with pytest.raises(InputError, match=r"jobs\[0\] \(b\): status 'skipped' but 'vm' is None"):
        parse_report(report(job("b", "skipped", vm=None)), file="r.json", include_skipped=True)


def test_an_esxi_managed_object_id_is_accepted() -> None:
    assert parse_report(report(job("a", vm="42")), file="r").targets[0].vm == "42"


@pytest.mark.parametrize(("document", "message"), [
    ([], "r.json: not an asyncovf run report (expected a JSON object with 'jobs'"),
    ({"vms": []}, "r.json: not an asyncovf run report"),
    (report(version=7), "r.json: report version 7; this asyncovf reads version 1"),
    ({"jobs": []}, "r.json: report version None"),
    (report() | {"jobs": {"a": 1}}, "r.json: 'jobs' is dict, expected a list"),
    (report("a"), "r.json: jobs[0]: expected an object, got str"),
    (report({"status": "imported", "vm": "vm-1"}), "r.json: jobs[0]: 'name' missing"),
    (report(job("a", "done")), "r.json: jobs[0] (a): status 'done' is not one of aborted, "
                               "failed, imported, skipped"),
    (report(job("a", vm=None)), "r.json: jobs[0] (a): status 'imported' but 'vm' is None, "
                                "not a managed object id such as 'vm-123'"),
    (report(job("a", vm="vm 1")), "r.json: jobs[0] (a): status 'imported' but 'vm' is 'vm 1'"),
    (report(job("a", vm=12)), "r.json: jobs[0] (a): status 'imported' but 'vm' is 12"),
    (report(job("a", vm="vm-1"), job("b", vm="vm-1")),
     "r.json: jobs[1] (b): vm-1 is also 'a' (r.json: jobs[0] (a)); a VM has one name"),
])
def test_a_malformed_report_is_refused_naming_the_file_and_the_job(
    document: Any, message: str
) -> None:
    with pytest.raises(InputError) as caught:
        parse_report(document, file="r.json")
    assert str(caught.value).startswith(message)


def test_the_same_vm_twice_under_one_name_is_one_target() -> None:
    parsed = parse_report(report(job("a", vm="vm-1"), job("a", vm="vm-1")), file="r")
    assert [t.vm for t in parsed.targets] == ["vm-1"]


def test_reading_a_report_file_that_is_not_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_text('{\n  "version": 1,\n  "jobs": [oops]\n}\n')
    with pytest.raises(InputError, match=r"report\.json:3: not JSON \(Expecting value\), "
                                         r"so not a run report"):
        read_report(path)


def test_reading_a_missing_or_binary_report_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputError) as missing:
        read_report(tmp_path / "missing.json")
    assert str(missing.value) == f"{tmp_path / 'missing.json'}: No such file or directory"
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InputError, match=r"binary\.json: not UTF-8 text"):
        read_report(binary)


def test_the_reports_of_shards_are_merged_and_must_agree(tmp_path: Path) -> None:
    one, two, bad = tmp_path / "r0.json", tmp_path / "r1.json", tmp_path / "bad.json"
    one.write_text(json.dumps(report(job("a", vm="vm-1"), job("b", "failed", vm=None))))
    two.write_text(json.dumps(report(job("c", vm="vm-3"))))
    bad.write_text(json.dumps(report(job("z", vm="vm-3"))))
    merged = read_reports([one, two])
    assert [(t.vm, t.name) for t in merged.targets] == [("vm-1", "a"), ("vm-3", "c")]
    assert merged.left_alone == 1
    with pytest.raises(InputError, match="vm-3 is also 'c'"):
        read_reports([one, two, bad])


@pytest.mark.parametrize(("actual", "expected", "same"), [
    ("web-001", "web-001", True),
    ("a%2fb", "a/b", True),
    ("a%2Fb%5cc%25d", "a/b\\c%d", True),
    ("WEB-001", "web-001", False),
    ("web-0010", "web-001", False),
    ("a%2fb", "a%2fb", True),
])
def test_a_name_matches_as_vcenter_escapes_it(actual: str, expected: str, same: bool) -> None:
    assert same_name(actual, expected) is same


def test_the_summary_shows_problems_first_and_counts_every_status() -> None:
    results = [
        RemovalResult(CleanupTarget("vm-1", "a", "r"), RemovalStatus.REMOVED, powered_off=True),
        RemovalResult(CleanupTarget("vm-2", "b", "r"), RemovalStatus.ALREADY_GONE),
        RemovalResult(CleanupTarget("vm-3", "c", "r"), RemovalStatus.SKIPPED, "renamed"),
        RemovalResult(CleanupTarget("vm-4", "d", "r"), RemovalStatus.FAILED, "NoPermission"),
    ]
    lines = summary(results).splitlines()
    assert [line.split()[0] for line in lines[:4]] == ["failed", "skipped", "removed", "already"]
    assert "powered off first" in lines[2]
    assert lines[-1] == ("4 VMs targeted: 1 failed, 1 skipped, 0 interrupted, 1 removed, "
                         "1 already gone")
