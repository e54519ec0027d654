"""What a run report says about the run itself: tool, command line, vCenter, packages, settings."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace
from typing import Any

from asyncovf import __version__
from asyncovf.engine.options import RunSettings
from asyncovf.report import RunInfo, about_record, build_report


def runner(**extra: Any) -> Any:
    member = SimpleNamespace(size=3 * 2**20)
    package = SimpleNamespace(kind="ova", members={"a.ovf": SimpleNamespace(size=1000),
                                                   "a-disk1.vmdk": member},
                              files={"a-disk1.vmdk": SimpleNamespace(content_size=2**20)})
    extra.setdefault("settings", RunSettings(ramp=(1, 2, 4), ramp_interval=5.0,
                                             bandwidth=80 * 2**20))
    return SimpleNamespace(
        started=100.0, finished=110.0, results=[], soap_calls=Counter(),
        concurrency_series=[(0.0, 1), (5.0, 2)], packages={"/srv/a.ova": package},
        sessions_opened=0, sessions_closed=0, relogins=0, sessions_renewed=0,
        soap_retries=0, **extra)


ABOUT = SimpleNamespace(fullName="VMware vCenter Server 8.0.2 build-22617221", version="8.0.2",
                        build="22617221", apiVersion="8.0.2.0", vendor="VMware, Inc.")


def test_the_report_records_the_tool_command_packages_and_settings() -> None:
    run = build_report(runner(), RunInfo(batch="b.yaml", concurrency=4, argv=(
        "run", "b.yaml", "--password", "hunter2", "--ramp", "1:4")))["run"]
    assert run["tool"] == {"name": "asyncovf", "version": __version__}
    assert run["command"] == ["asyncovf", "run", "b.yaml", "--password", "***", "--ramp", "1:4"]
    assert run["packages"] == [{"source": "/srv/a.ova", "kind": "ova",
                                "bytes": 3 * 2**20 + 1000, "upload_bytes": 2**20}]
    assert run["settings"]["ramp"] == [1, 2, 4] and run["settings"]["ramp_interval"] == 5.0
    assert run["settings"]["bandwidth"] == 80 * 2**20
    assert run["vcenter"] is None  # not logged in: nothing invented


def test_the_report_records_vcenters_about_from_the_run_info_or_the_runner() -> None:
    expected = {"fullName": "VMware vCenter Server 8.0.2 build-22617221", "version": "8.0.2",
                "build": "22617221", "apiVersion": "8.0.2.0"}
    assert about_record(ABOUT) == expected
    given = RunInfo(batch=None, concurrency=4, argv=(), about=about_record(ABOUT))
    assert build_report(runner(), given)["run"]["vcenter"] == expected
    kept = runner(about=about_record(ABOUT))
    assert build_report(kept, RunInfo(batch=None, concurrency=4, argv=()))["run"][
        "vcenter"] == expected


def test_a_run_that_asked_for_every_vm_s_import_spec_says_so() -> None:
    from asyncovf.loadreport.summary import settings_text

    reuse = build_report(runner(), RunInfo(batch=None, concurrency=4, argv=()))["run"]
    per_vm = build_report(runner(settings=RunSettings(spec_per_vm=True)),
                          RunInfo(batch=None, concurrency=4, argv=()))["run"]
    assert (reuse["settings"]["spec_per_vm"], per_vm["settings"]["spec_per_vm"]) == (False, True)
    assert "CreateImportSpec" not in settings_text(reuse)
    assert settings_text(per_vm).endswith("; one CreateImportSpec per VM")


def test_a_run_of_clones_says_so_in_its_settings_line() -> None:
    from asyncovf.loadreport.summary import settings_text

    clones = build_report(runner(settings=RunSettings(strategy="clone")),
                          RunInfo(batch=None, concurrency=4, argv=()))["run"]
    assert clones["settings"]["strategy"] == "clone"
    assert settings_text(clones).endswith("; clones of one seed per group (--strategy clone)")
    imports = build_report(runner(), RunInfo(batch=None, concurrency=4, argv=()))["run"]
    assert "clone" not in settings_text(imports)
