"""The load report's page and charts: readable from 10 to 10,000 jobs, nothing raw."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("matplotlib")

from asyncovf.loadreport import charts  # noqa: E402


def fleet(count: int) -> dict[str, Any]:
    jobs = []
    for index in range(count):
        start = index * 0.01
        jobs.append({"name": f"web-{index:05d}", "status": "imported", "bytes": 2**20,
                     "start": start, "end": start + 1.5, "error": None, "error_kind": None,
                     "phases": [{"attempt": 1, "phase": "spec", "start": start,
                                 "end": start + 0.0016219999999997903},
                                {"attempt": 1, "phase": "upload", "start": start + 0.1,
                                 "end": start + 1.5}]})
    jobs[-1].update(status="failed", error="NFC answered 500", error_kind="upload")
    seconds = count * 0.01 + 1.5
    return {"version": 1, "jobs": jobs, "totals": {"imports_per_second": 1.0},
            "run": {"seconds": seconds + 0.000441, "concurrency": 16,
                    "started_at": "2026-12-01T10:00:00+00:00",
                    "ramp": {"steps": [1, 2, 4, 8, 16], "interval": 5.0},
                    "concurrency_series": [[0, 1], [5, 2], [10, 4], [15, 8], [20, 16]],
                    "settings": {"bandwidth": 80 * 2**20}}}


@pytest.fixture
def axes() -> Any:
    plt = charts._pyplot()
    figure, ax = plt.subplots()
    yield ax
    plt.close(figure)


def test_a_small_timeline_names_each_vm_on_its_axis(axes: Any) -> None:
    charts._gantt(axes, fleet(10))
    assert [label.get_text() for label in axes.get_yticklabels()][:2] == ["web-00000",
                                                                          "web-00001"]
    assert not axes.images


@pytest.mark.parametrize("count", [400, 10_000])
def test_a_large_timeline_is_a_heat_map_of_jobs_per_phase(axes: Any, count: int) -> None:
    charts._gantt(axes, fleet(count))
    assert len(axes.images) == 1 and not axes.patches  # no bar per job
    assert [label.get_text() for label in axes.get_yticklabels()] == ["spec", "upload"]
    assert axes.get_title() == f"Timeline of {count} jobs: how many are in each phase"


def test_latency_is_drawn_on_a_log_scale(axes: Any) -> None:
    charts._percentiles(axes, fleet(10))
    assert axes.get_yscale() == "log"


def test_the_page_prints_settings_in_words_and_rounded_numbers() -> None:
    page = charts.render_html(fleet(50))
    assert "{&#x27;steps&#x27;" not in page and "{'steps'" not in page
    assert "0.0016219999" not in page and ".500441" not in page
    assert "ramp 1 → 2 → 4 → 8 → 16 workers, a step every 5 s; bandwidth 80.0 MiB/s" in page
    assert '<span id="knee">' in page and '<table id="errors">' in page
    assert "http://" not in page and "https://" not in page
