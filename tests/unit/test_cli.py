"""The command line: light to import, and the flags ``import`` and ``run`` share mean one thing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from asyncovf.cli.groups import run_settings
from asyncovf.cli.parser import build_parser

ROOT = Path(__file__).resolve().parents[2]

SHARED_FLAGS = ("--parallel-disks", "3", "--lease-timeout", "7.5", "--keep-failed",
                "--no-verify-manifest", "--create-folders", "--on-conflict", "replace",
                "--job-retries", "2", "--report", "report.json")


def test_importing_the_command_line_loads_neither_pyvmomi_nor_aiohttp_nor_lxml_nor_rich() -> None:
    # The console script takes SIGINT and SIGTERM before the tool loads: the import
    # itself must stay light (asyncio alone takes a tenth of a second).
    code = ("import json, sys\n"
            "import asyncovf.cli\n"
            "heavy = ('pyVmomi', 'aiohttp', 'lxml', 'rich', 'asyncio', 'anyio')\n"
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_import_and_run_turn_the_flags_they_share_into_the_same_settings() -> None:
    parser = build_parser()
    one = parser.parse_args(["import", "appliance.ova", *SHARED_FLAGS])
    batch = parser.parse_args(["run", "batch.yaml", *SHARED_FLAGS])
    assert run_settings(one, concurrency=1) == run_settings(batch, concurrency=1)
    assert one.report == batch.report == "report.json"


@pytest.mark.parametrize(("command", "job_retries"), [("import", 0), ("run", 1)])
def test_one_import_is_retried_only_when_asked_and_a_batch_job_once(command: str,
                                                                    job_retries: int) -> None:
    args = build_parser().parse_args([command, "source"])
    assert run_settings(args, concurrency=1).job_retries == job_retries


#: A value for each per-VM flag, and what the options value holds for it.
FLAG_VALUES = {
    "deployment": (["small"], "small"),
    "disk_provisioning": (["thin"], "thin"),
    "locale": (["de_DE"], "de_DE"),
    "hidden": ([], True),
    "network_mapping": (["VM Network=DC0_DVPG0"], {"VM Network": "DC0_DVPG0"}),
    "properties": (["a.b=c=d"], {"a.b": "c=d"}),
    "annotation": (["notes"], "notes"),
    "ip_allocation_policy": (["fixedPolicy"], "fixedPolicy"),
    "ip_protocol": (["IPv6"], "IPv6"),
    "extra_config": (["guestinfo.x=1"], {"guestinfo.x": "1"}),
    "inject_ovf_env": ([], True),
    "hardware_version": (["19"], "vmx-19"),
    "mark_as_template": ([], True),
    "power_on": ([], True),
    "wait_for_ip": ([], True),
    "ip_timeout": (["12.5"], 12.5),
}


@pytest.mark.parametrize("key", sorted(FLAG_VALUES))
def test_each_per_vm_flag_is_its_option_of_the_one_table(key: str) -> None:
    from asyncovf.cli.import_ import import_job
    from asyncovf.engine.options import OPTIONS_BY_KEY

    option = OPTIONS_BY_KEY[key]
    words, expected = FLAG_VALUES[key]
    extra = ["--power-on"] if key == "wait_for_ip" else []
    args = build_parser().parse_args(["import", "/x.ova", option.flag, *words, *extra])
    value = getattr(import_job(args, "default-name").options, key)
    assert (dict(value) if isinstance(value, dict) else value) == expected


def test_every_per_vm_option_with_a_flag_is_tested_above() -> None:
    from asyncovf.engine.options import OPTIONS

    assert {option.key for option in OPTIONS if option.has_flag} == set(FLAG_VALUES)


def test_the_options_document_is_under_the_flags_and_names_the_vm(tmp_path: Path) -> None:
    from asyncovf.cli.import_ import import_job

    document = tmp_path / "options.json"
    document.write_text(json.dumps({"Name": "from-document", "PowerOn": True,
                                    "Annotation": "document",
                                    "PropertyMapping": [{"Key": "a", "Value": "1"}]}))
    args = build_parser().parse_args(["import", "/x.ova", "--options", str(document),
                                      "--annotation", "flag"])
    job = import_job(args, "descriptor-name")
    assert (job.name, job.options.power_on, job.options.annotation,
            dict(job.options.properties)) == ("from-document", True, "flag", {"a": "1"})
    named = build_parser().parse_args(["import", "/x.ova", "--name", "given"])
    assert import_job(named, "descriptor-name").name == "given"


def test_version_prints_the_package_version() -> None:
    import asyncovf

    done = subprocess.run([sys.executable, "-m", "asyncovf", "--version"], capture_output=True,
                          text=True, cwd=ROOT, timeout=60, check=False)
    assert (done.returncode, done.stdout) == (0, f"asyncovf {asyncovf.__version__}\n")


def test_once_a_command_has_ended_a_signal_cannot_kill_the_exiting_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import signal

    import asyncovf.cli
    from asyncovf.cli.signals import Interruption

    monkeypatch.setattr(asyncovf.cli, "main", lambda argv=None: 130)
    monkeypatch.setattr(Interruption, "installed", None)  # console() installs the process's
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(SystemExit) as exited:
            asyncovf.cli.console()
        assert exited.value.code == 130
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def test_importing_the_command_line_takes_no_signal_and_main_gives_back_what_it_took(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only the console script keeps SIGINT and SIGTERM; a library calling main() gets
    its own handlers back."""
    import signal

    import asyncovf.cli
    from asyncovf.cli.signals import Interruption

    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    monkeypatch.setattr(Interruption, "installed", None)
    during: list[object] = []

    def command(argv: object, interruption: Interruption) -> int:
        during.extend(signal.getsignal(s) for s in before)
        return 0

    monkeypatch.setattr(asyncovf.cli, "_command", command)
    assert asyncovf.cli.main([]) == 0
    assert all(isinstance(getattr(handler, "__self__", None), Interruption)
               for handler in during)
    assert {s: signal.getsignal(s) for s in before} == before
