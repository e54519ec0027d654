"""Hostile input through the real command line: refused in one line, in bounded memory.

Issue 15's bound, measured as an operator meets it: each case writes its input
under ``tmp_path`` and runs ``asyncovf run FILE --dry-run`` in a fresh
interpreter, whose whole-process peak RSS must stay at or below 200 MiB.

The peak is the child's own ``VmHWM``, printed by :mod:`benchmarks.peak` as it
exits. Not ``ru_maxrss`` from ``wait4``: Linux carries the parent's high-water
mark over fork and exec, so a child of this pytest process would "peak" at
pytest's size before running a line.

A batch file is refused before any connection, on stderr, in one line that
names the file, the line and the field, exit 2. A hostile package is its job's
failure, said by the dry run in one located line of its table, with nothing
left on the simulator. Every case records its peak (``record_property``
``peak_rss_mib``), and the module prints a table of them (seen with ``-s``).
"""

from __future__ import annotations

import gzip
import io
import os
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from asyncovf.engine.plan import (
    MAX_BATCH_BYTES,
    MAX_COUNT_PER_ENTRY,
    MAX_CSV_CELL,
    MAX_VMS_PER_BATCH,
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
)
from asyncovf.engine.templates import MAX_FORMAT_WIDTH
from benchmarks.peak import MARKER
from tests.factory import ovf_descriptor
from tests.unit.test_tar_headers import SIZE, base256, write_hostile_ova
from tests.vcsim.harness import Vcsim

#: Issue 15: the peak of the whole process for any hostile input.
PEAK_BOUND_MIB = 200
ROOT = Path(__file__).resolve().parents[2]
HEAD = "defaults:\n  source: ./appliance.ova\n  cluster: DC0_C0\nvms:\n"

#: Each case's measured peak, for the table printed after the module.
PEAKS: dict[str, tuple[float, int, str]] = {}


@dataclass(frozen=True)
class Measured:
    status: int
    stdout: str
    #: What the command wrote to stderr, without benchmarks.peak's line.
    stderr: str
    peak_mib: float


def run_measured(args: list[str], env: dict[str, str]) -> Measured:
    """``asyncovf ARGS`` in a fresh interpreter, with its own peak RSS."""
    result = subprocess.run([sys.executable, "-m", "benchmarks.peak", "asyncovf", *args],
                            cwd=ROOT, env=env, capture_output=True, text=True, check=False,
                            timeout=90)
    stderr, marker, peak = result.stderr.rpartition(f"\n{MARKER} ")
    assert marker, f"no peak reported (exit {result.returncode}): {result.stderr[-2000:]}"
    return Measured(result.returncode, result.stdout, stderr, int(peak.split()[0]) / 1024)


def no_vcenter() -> dict[str, str]:
    """An environment naming no vCenter: a batch file is refused before any connection."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("VSPHERE_", "GOVC_", "VMWARE_"))}


def simulator(vcsim: Vcsim) -> dict[str, str]:
    """The environment a user's shell gives ``asyncovf``: the simulator's VSPHERE_*."""
    return no_vcenter() | {"VSPHERE_SERVER": vcsim.url, "VSPHERE_USER": vcsim.username,
                           "VSPHERE_PASSWORD": vcsim.password}


@pytest.fixture(scope="module", autouse=True)
def peak_table() -> Iterator[None]:
    yield
    if PEAKS:
        width = max(map(len, PEAKS))
        print(f"\n{'case':<{width}}  peak RSS MiB  exit  line")
        for case, (peak, status, line) in PEAKS.items():
            print(f"{case:<{width}}  {peak:12.1f}  {status:4d}  {line[:120]}")


def record(record_property: Callable[[str, object], None], case: str, measured: Measured,
           line: str, tmp_path: Path) -> None:
    record_property("peak_rss_mib", round(measured.peak_mib, 1))
    PEAKS[case] = (measured.peak_mib, measured.status, line.replace(f"{tmp_path}/", ""))


# -- batch files: refused before any connection -------------------------------------------------

def laughs(key: str) -> str:
    """A billion laughs: 9 levels of 10 aliases each, 10^9 strings once expanded."""
    return (HEAD + '  - name: "w-{index}"\n' + f"    {key}:\n" + '      l0: &l0 "lol"\n'
            + "".join(f"      l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 10)}]\n"
                      for n in range(1, 10)))


ANCHOR = ("YAML: anchor &l0: anchors and aliases are not allowed in a batch file; repeat the "
          "value or put it in defaults")
HUGE = ">1000000000"
BATCHES: dict[str, tuple[str, int, str]] = {
    # the file's text, the line and message after "asyncovf: error: FILE:"
    "anchor-bomb-properties": (laughs("properties"), 7, ANCHOR),
    "anchor-bomb-extra-config": (laughs("extra_config"), 7, ANCHOR),
    "count-100-million": (
        HEAD + '  - name: "w-{index}"\n    count: 100000000\n', 6,
        f"vms[0].count: 100000000 is over the limit of {MAX_COUNT_PER_ENTRY} VMs per entry; "
        "split it into several entries"),
    "width-in-name": (
        HEAD + f'  - name: "w-{{index:{HUGE}}}"\n', 5,
        f"vms[0].name: format width or precision in {{index:{HUGE}}} is over the limit of "
        f"{MAX_FORMAT_WIDTH}"),
    "width-in-annotation": (
        HEAD + f'  - name: w-1\n    annotation: "{{name:{HUGE}}}"\n', 6,
        f"vms[0].annotation: format width or precision in {{name:{HUGE}}} is over the limit "
        f"of {MAX_FORMAT_WIDTH}"),
    "width-in-property": (
        HEAD + f'  - name: w-1\n    properties:\n      motd: "{{index:{HUGE}}}"\n', 7,
        f"vms[0].properties.motd: format width or precision in {{index:{HUGE}}} is over the "
        f"limit of {MAX_FORMAT_WIDTH}"),
    "nested-100000-deep": (
        HEAD + "  - name: w-1\n    properties: " + "[" * 100_000 + "]" * 100_000 + "\n", 6,
        f"YAML: nested more than {MAX_YAML_DEPTH} levels deep"),
    "too-many-values": (
        HEAD + "  - name: w-1\n    properties: {big: [" + "a," * MAX_YAML_NODES + "a]}\n", 6,
        f"YAML: more than {MAX_YAML_NODES} values in one file; list larger fleets with count "
        "or vms_csv"),
}


@pytest.mark.parametrize("case", BATCHES, ids=list(BATCHES))
def test_a_hostile_batch_file_is_one_line_and_exit_2_within_the_memory_bound(
    tmp_path: Path, record_property: Callable[[str, object], None], case: str
) -> None:
    text, line, message = BATCHES[case]
    batch = tmp_path / "fleet.yaml"
    batch.write_text(text)
    measured = run_measured(["run", str(batch), "--dry-run"], no_vcenter())
    expected = f"asyncovf: error: {batch}:{line}: {message}"
    record(record_property, case, measured, expected, tmp_path)
    assert (measured.status, measured.stderr, measured.stdout) == (2, expected + "\n", "")
    assert measured.peak_mib <= PEAK_BOUND_MIB


def csv_with_a_long_cell(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "rows.csv"
    path.write_text(f"name,source,annotation\nc-1,a.ova,short\nc-2,a.ova,{'x' * 2**20}\n")
    return path, f"{path}:3: CSV: a cell is longer than the limit of {MAX_CSV_CELL} characters"


def sparse_over_the_size_limit(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    with path.open("wb") as sparse:
        sparse.truncate(MAX_BATCH_BYTES + 1)
    return path


def oversized_yaml(tmp_path: Path) -> tuple[Path, str]:
    path = sparse_over_the_size_limit(tmp_path, "fleet.yaml")
    return path, f"{path}: larger than the limit of {MAX_BATCH_BYTES} bytes for a batch file"


def oversized_vms_csv(tmp_path: Path) -> tuple[Path, str]:
    rows = sparse_over_the_size_limit(tmp_path, "rows.csv")
    path = tmp_path / "fleet.yaml"
    path.write_text("vms_csv: rows.csv\n")
    return path, f"{rows}: larger than the limit of {MAX_BATCH_BYTES} bytes for a batch file"


# -- batch files at the limits: read in full, within the same bound ---------------------------

MISSING_SERVER = ("missing --server (or VSPHERE_SERVER, GOVC_URL, VMWARE_HOST); --user (or "
                  "VSPHERE_USER, GOVC_USERNAME, VMWARE_USER); --password (or VSPHERE_PASSWORD, "
                  "GOVC_PASSWORD, VMWARE_PASSWORD)")


def csv_at_the_vm_limit(tmp_path: Path, annotation: int = 0,
                        distinct: bool = False) -> tuple[Path, str]:
    """MAX_VMS_PER_BATCH rows, each its own VM (``annotation`` characters of note each,
    the same note in every row, or a ``distinct`` one)."""
    path = tmp_path / "rows.csv"
    note = "," + "n" * annotation if annotation else ""
    with path.open("w") as rows:
        rows.write("name,source" + (",annotation" if annotation else "") + "\n")
        rows.writelines(f"vm-{i:06d},/srv/ova/appliance.ova"
                        f"{f'{note[:-6]}{i:06d}' if distinct else note}\n"
                        for i in range(MAX_VMS_PER_BATCH))
    assert path.stat().st_size <= MAX_BATCH_BYTES
    return path, MISSING_SERVER


def csv_at_the_vm_and_size_limits(tmp_path: Path) -> tuple[Path, str]:
    """MAX_VMS_PER_BATCH rows filling the size limit: 120 characters of annotation each."""
    return csv_at_the_vm_limit(tmp_path, annotation=120)


def distinct_csv_at_the_vm_and_size_limits(tmp_path: Path) -> tuple[Path, str]:
    """As above, but no two rows' notes alike: nothing to share between their jobs."""
    return csv_at_the_vm_limit(tmp_path, annotation=120, distinct=True)


def counts_at_the_vm_limit(tmp_path: Path) -> tuple[Path, str]:
    """A few lines asking for MAX_VMS_PER_BATCH VMs with ``count``."""
    path = tmp_path / "fleet.yaml"
    entries = MAX_VMS_PER_BATCH // MAX_COUNT_PER_ENTRY
    path.write_text("defaults:\n  source: /srv/ova/appliance.ova\nvms:\n" + "".join(
        f'  - name: "w{n}-{{index:05d}}"\n    count: {MAX_COUNT_PER_ENTRY}\n'
        for n in range(entries)))
    return path, MISSING_SERVER


FILES: dict[str, Callable[[Path], tuple[Path, str]]] = {
    # writes the batch file: its path, the message after "asyncovf: error: "
    "csv-cell-1-MiB": csv_with_a_long_cell,
    "yaml-over-size-limit": oversized_yaml,
    "vms-csv-over-size-limit": oversized_vms_csv,
    # Legal files, at MAX_VMS_PER_BATCH: read in full, then refused for want of a vCenter
    # (the peak is the batch's, as it is read and expanded).
    "counts-at-vm-limit": counts_at_the_vm_limit,
    "csv-100000-rows-at-vm-limit": csv_at_the_vm_limit,
    "csv-100000-rows-at-size-limit": csv_at_the_vm_and_size_limits,
    "csv-100000-distinct-rows-at-size-limit": distinct_csv_at_the_vm_and_size_limits,
}


@pytest.mark.parametrize("case", FILES, ids=list(FILES))
def test_a_batch_file_at_or_over_a_size_limit_is_one_line_and_exit_2_within_the_memory_bound(
    tmp_path: Path, record_property: Callable[[str, object], None], case: str
) -> None:
    batch, message = FILES[case](tmp_path)
    measured = run_measured(["run", str(batch), "--dry-run"], no_vcenter())
    expected = f"asyncovf: error: {message}"
    record(record_property, case, measured, expected, tmp_path)
    assert (measured.status, measured.stderr, measured.stdout) == (2, expected + "\n", "")
    assert measured.peak_mib <= PEAK_BOUND_MIB


# -- packages: each its job's failure, said by the dry run --------------------------------------

def write_ova(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


BOMB_CAPACITY_MIB = 2
#: The disk's bound: capacity + 1/64 + 1 MiB.
BOMB_LIMIT = BOMB_CAPACITY_MIB * 2**20 * 65 // 64 + 2**20
BOMB_MEMBER = 16 * 2**20
BOMB_MEMBERS = 256  # 4 GiB once expanded, from 4 MiB in the OVA


def gzip_bomb_ova(tmp_path: Path) -> tuple[Path, str]:
    """A disk of 2 MiB capacity whose gzip-compressed file expands to 4 GiB of zeros
    (concatenated members, as pigz writes them)."""
    data = gzip.compress(bytes(BOMB_MEMBER), compresslevel=9, mtime=0) * BOMB_MEMBERS
    href = "bomb-disk1.vmdk"
    descriptor = ovf_descriptor("bomb", [(href, len(data), BOMB_CAPACITY_MIB)],
                                compression="gzip")
    path = write_ova(tmp_path / "bomb.ova", [("bomb.ovf", descriptor.encode()), (href, data)])
    return path, (f"{path}: {href} decompresses to more than {BOMB_LIMIT} bytes, the bound "
                  f"for its disk of {BOMB_CAPACITY_MIB * 2**20} bytes (capacity + 1/64 + 1 MiB)")


def negative_tar_size_ova(tmp_path: Path) -> tuple[Path, str]:
    """``vm.mf``'s header gives a GNU base-256 size of -1: a read of -1 bytes reads to
    the end of the file, here 1 GiB away (sparse: zeros that take no disk)."""
    path = tmp_path / "vm.ova"
    offsets = write_hostile_ova(path, (SIZE, base256(-1)))
    os.truncate(path, 2**30)
    return path, f"{path}: member 'vm.mf' (header at offset {offsets['header']}): negative size -1"


NETWORKS = 10_000


def many_networks_ova(tmp_path: Path) -> tuple[Path, str]:
    """A descriptor whose NetworkSection lists 10,000 networks, none on the simulator."""
    href = "wide-disk1.vmdk"
    disk = gzip.compress(b"", mtime=0)  # no data: the package is opened, not uploaded
    text = ovf_descriptor("wide", [(href, len(disk), 16)], network="net-00000",
                          compression="gzip")
    one = ('    <Network ovf:name="net-00000">\n      <Description>The net-00000 network'
           "</Description>\n    </Network>\n")
    assert one in text
    many = "".join(f'    <Network ovf:name="net-{i:05d}"/>\n' for i in range(NETWORKS))
    path = write_ova(tmp_path / "wide.ova", [("wide.ovf", text.replace(one, many).encode()),
                                             (href, disk)])
    return path, (f"{NETWORKS} networks are not mapped ('net-00000', 'net-00001', 'net-00002', "
                  f"… and {NETWORKS - 3} more); using 'VM Network'")



PACKAGES: dict[str, tuple[Callable[[Path], tuple[Path, str]], int]] = {
    # writes the package: its path and the dry run's one line about it; the exit status
    "gzip-bomb-ova": (gzip_bomb_ova, 2),
    "tar-negative-base256-size": (negative_tar_size_ova, 2),
    "descriptor-10000-networks": (many_networks_ova, 0),
}


@pytest.mark.integration
@pytest.mark.parametrize("case", PACKAGES, ids=list(PACKAGES))
def test_a_hostile_package_is_one_line_of_the_dry_run_within_the_memory_bound(
    vcsim: Vcsim, tmp_path: Path, record_property: Callable[[str, object], None], case: str
) -> None:
    build, status = PACKAGES[case]
    source, message = build(tmp_path)
    name = f"hostile-{case}"
    batch = tmp_path / "fleet.yaml"
    batch.write_text(f"defaults:\n  source: {source}\n  cluster: DC0_C0\n"
                     f"  datastore: LocalDS_0\nvms:\n  - name: {name}\n")
    measured = run_measured(["run", str(batch), "--dry-run", "--ca-file", str(vcsim.ca_file)],
                            simulator(vcsim))
    record(record_property, case, measured, message, tmp_path)
    assert "Traceback" not in measured.stdout + measured.stderr
    if status:  # refused: the job's one error line, nothing on stderr
        assert measured.stdout.splitlines() == [
            f"ERROR {name}: {source} -> -", f"      error: {message}",
            "dry run: 1 VM in 1 group; 1 would fail; nothing was created"]
        assert measured.stderr == ""
    else:  # handled: one warning, said once in the table and once as a log line
        assert measured.stdout.splitlines() == [
            f"ok    {name}: {source} -> /DC0/host/DC0_C0/Resources on LocalDS_0 in /DC0/vm",
            f"      warning: {message}",
            "dry run: 1 VM in 1 group; 0 would fail; nothing was created"]
        assert measured.stderr == f"asyncovf: WARNING: {name}: {message}\n"
    assert measured.status == status
    assert measured.peak_mib <= PEAK_BOUND_MIB
    counters = vcsim.counters()
    assert counters.calls("ImportVApp") == 0
    assert (counters.leases_open, counters.sessions_live) == (0, 0)
