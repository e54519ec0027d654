"""One way to say a count and a size: "1 VM", "2 VMs"; binary units only."""

from __future__ import annotations

import pytest

from asyncovf.quantity import quantity, size


@pytest.mark.parametrize(("count", "expected"), [(0, "0 VMs"), (1, "1 VM"), (2, "2 VMs")])
def test_a_count_agrees_with_its_noun(count: int, expected: str) -> None:
    assert quantity(count, "VM") == expected


@pytest.mark.parametrize(("count", "expected"), [
    (512, "512 B"), (3 * 2**10, "3.0 KiB"), (336_384, "328.5 KiB"), (812 * 2**20, "812.0 MiB"),
    (1.21 * 2**30, "1.21 GiB"), (2 * 2**40, "2.00 TiB"),
])
def test_a_size_is_in_the_largest_binary_unit_it_fills(count: float, expected: str) -> None:
    assert size(count) == expected


def test_the_run_totals_the_display_and_the_report_say_one_in_the_singular() -> None:
    from asyncovf.loadreport.summary import settings_text
    from asyncovf.progress import _ramp
    from asyncovf.report import totals_line

    totals = {"jobs": 1, "imported": 1, "skipped": 0, "failed": 0, "aborted": 0,
              "imports_per_second": 1.0, "seconds": 1.0, "bytes": 0}
    assert totals_line({"totals": totals}).startswith("1 job: 1 imported")
    assert _ramp((1, 1, 1)) == "1 worker"
    assert _ramp((1, 2, 1)) == "ramp 1/2: 1 worker"
    assert settings_text({"concurrency": 1}).startswith("1 worker;")
    assert settings_text({"concurrency": 8}).startswith("8 workers;")
