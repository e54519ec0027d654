"""Batch file limits: a hostile or mistyped file is refused, in one located line,
before the work it asks for grows (README, "Batch file limits").

Each case asserts the exact error and that the work stayed bounded: the YAML
nodes composed, and the peak of Python allocations while loading.
"""

from __future__ import annotations

import csv
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from asyncovf.engine import plan
from asyncovf.engine.plan import (
    MAX_BATCH_BYTES,
    MAX_COUNT_PER_ENTRY,
    MAX_CSV_CELL,
    MAX_VMS_PER_BATCH,
    MAX_YAML_DEPTH,
    MAX_YAML_NODES,
    load_batch,
)
from asyncovf.engine.templates import MAX_FORMAT_WIDTH, MAX_RENDERED
from asyncovf.errors import BatchError

#: The peak of Python allocations any refused file may cost.
PEAK_BOUND = 50 * 1024 * 1024
HEAD = "defaults:\n  source: a.ova\nvms:\n"


@pytest.fixture
def composed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts the YAML nodes composed while a test loads batch files."""
    count = [0]
    compose_node = plan._LineLoader.compose_node

    def counting(self: plan._LineLoader, parent: Any, index: int) -> Any:
        count[0] += 1
        return compose_node(self, parent, index)

    monkeypatch.setattr(plan._LineLoader, "compose_node", counting)
    yield count


def refused(path: Path, bound: int = PEAK_BOUND) -> tuple[str, int]:
    """Load ``path``, expecting a BatchError: its message and the allocation peak
    (below ``bound``)."""
    tracemalloc.start()
    try:
        with pytest.raises(BatchError) as caught:
            load_batch(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(caught.value)
    assert "\n" not in message and len(message) < 300, message  # one short line
    assert peak < bound, peak
    return message, peak


def write(tmp_path: Path, text: str, name: str = "batch.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def laughs(key: str) -> str:
    """A billion laughs: 9 levels of 10 aliases each, 10^9 strings once expanded."""
    lines = [HEAD, "  - name: a\n", f"    {key}:\n", '      l0: &l0 "lol"\n']
    lines += [f"      l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 10)}]\n" for n in range(1, 10)]
    return "".join(lines)


@pytest.mark.parametrize("key", ["properties", "extra_config"])
def test_an_anchor_is_refused_where_it_stands_before_any_alias_expands(
    tmp_path: Path, composed: list[int], key: str
) -> None:
    path = write(tmp_path, laughs(key))
    message, _ = refused(path)
    assert message == (f"{path}:6: YAML: anchor &l0: anchors and aliases are not allowed in "
                       "a batch file; repeat the value or put it in defaults")
    assert composed[0] < 20  # the nodes up to the first anchor, no more


def test_an_alias_without_its_anchor_is_refused_too(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD + "  - name: a\n    annotation: *notes\n")
    message, _ = refused(path)
    assert message == (f"{path}:5: YAML: alias *notes: anchors and aliases are not allowed "
                       "in a batch file; repeat the value or put it in defaults")


@pytest.mark.parametrize("opening", ["[", "{a: "])
def test_deep_nesting_is_refused_at_the_depth_limit_not_pythons_recursion_limit(
    tmp_path: Path, composed: list[int], opening: str
) -> None:
    closing = "]" if opening == "[" else "}"
    path = write(tmp_path, HEAD + "  - name: a\n    properties: "
                 + opening * 100_000 + closing * 100_000 + "\n")
    message, _ = refused(path)
    assert message == f"{path}:5: YAML: nested more than {MAX_YAML_DEPTH} levels deep"
    assert composed[0] <= 2 * MAX_YAML_DEPTH + 10  # a key and a value per level at most


def test_nesting_up_to_the_limit_still_loads(tmp_path: Path) -> None:
    # The root, vms, the entry and properties are 4 levels; the value adds the rest.
    def deep(levels: int) -> Path:
        return write(tmp_path, HEAD + "  - name: a\n    properties:\n      deep: "
                     + "[" * levels + "]" * levels + "\n")

    levels = MAX_YAML_DEPTH - 4
    (job,) = load_batch(deep(levels)).jobs
    assert job.options.properties == {"deep": "[" * levels + "]" * levels}  # str() of the list
    with pytest.raises(BatchError, match=f"nested more than {MAX_YAML_DEPTH} levels deep"):
        load_batch(deep(levels + 1))


@pytest.mark.parametrize("name", ["batch.yaml", "rows.csv"])
def test_a_file_over_the_size_limit_is_refused_unread(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    with path.open("wb") as sparse:
        sparse.truncate(MAX_BATCH_BYTES + 1)
    message, peak = refused(path)
    assert message == f"{path}: larger than the limit of {MAX_BATCH_BYTES} bytes for a batch file"
    assert peak < 1024 * 1024  # nothing of it read


def test_a_vms_csv_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    with (tmp_path / "rows.csv").open("wb") as sparse:
        sparse.truncate(MAX_BATCH_BYTES + 1)
    path = write(tmp_path, "vms_csv: rows.csv\n")
    message, peak = refused(path)
    assert message == (f"{tmp_path / 'rows.csv'}: larger than the limit of {MAX_BATCH_BYTES} "
                       "bytes for a batch file")
    assert peak < 1024 * 1024


def test_a_count_over_the_per_entry_limit_is_refused_before_expansion(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD + '  - name: "w-{index}"\n    count: 100000000\n')
    message, peak = refused(path)
    assert message == (f"{path}:5: vms[0].count: 100000000 is over the limit of "
                       f"{MAX_COUNT_PER_ENTRY} VMs per entry; split it into several entries")
    assert peak < 1024 * 1024


LONG_COUNTS = {
    # an integer to YAML, refused before int() meets its own digit limit
    "yaml-int": ("1" * 5000, "YAML: an integer of 5000 characters is too long"),
    # a string, as a CSV cell is
    "string": ('"' + "1" * 5000 + '"',
               f"vms[0].count: a number of 5000 digits is over the limit of "
               f"{MAX_COUNT_PER_ENTRY} VMs per entry; split it into several entries"),
}


@pytest.mark.parametrize("case", LONG_COUNTS, ids=list(LONG_COUNTS))
def test_a_count_with_thousands_of_digits_is_refused_in_one_line(
    tmp_path: Path, case: str
) -> None:
    count, error = LONG_COUNTS[case]
    path = write(tmp_path, HEAD + f'  - name: "w-{{index}}"\n    count: {count}\n')
    message, _ = refused(path)
    assert message == f"{path}:5: {error}"


def test_counts_over_the_per_batch_limit_are_refused_before_expansion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = MAX_VMS_PER_BATCH // MAX_COUNT_PER_ENTRY + 1
    path = write(tmp_path, HEAD + "".join(
        f'  - name: "w{n}-{{index}}"\n    count: {MAX_COUNT_PER_ENTRY}\n' for n in range(entries)))
    expanded: list[tuple[Any, ...]] = []

    def expand(*args: Any) -> Iterator[Any]:
        expanded.append(args)
        return iter(())

    monkeypatch.setattr(plan, "_expand", expand)
    message, _ = refused(path)
    line = 5 + 2 * (entries - 1)
    assert message == (f"{path}:{line}: vms[{entries - 1}].count: the batch reaches "
                       f"{entries * MAX_COUNT_PER_ENTRY} VMs here, over the limit of "
                       f"{MAX_VMS_PER_BATCH} per batch; split it into several files")
    assert expanded == []  # no entry was expanded


def test_a_batch_at_the_per_batch_limit_loads(tmp_path: Path) -> None:
    entries = MAX_VMS_PER_BATCH // MAX_COUNT_PER_ENTRY
    path = write(tmp_path, HEAD + "".join(
        f'  - name: "w{n}-{{index}}"\n    count: {MAX_COUNT_PER_ENTRY}\n' for n in range(entries)))
    assert len(load_batch(path).jobs) == MAX_VMS_PER_BATCH


HUGE = ">1000000000"
WIDTHS: dict[str, tuple[str, str]] = {
    # the entry's keys, the error after "file:line: "
    "name": (f'name: "w-{{index:{HUGE}}}"',
             f"vms[0].name: format width or precision in {{index:{HUGE}}} is over the limit "
             f"of {MAX_FORMAT_WIDTH}"),
    "annotation": (f'name: w-1\n    annotation: "{{name:{HUGE}}}"',
                   f"vms[0].annotation: format width or precision in {{name:{HUGE}}} is over "
                   f"the limit of {MAX_FORMAT_WIDTH}"),
    "property": (f'name: w-1\n    properties:\n      motd: "{{index:.{HUGE[1:]}}}"',
                 f"vms[0].properties.motd: format width or precision in "
                 f"{{index:.{HUGE[1:]}}} is over the limit of {MAX_FORMAT_WIDTH}"),
    "nested-spec": ('name: "w-{index:>{index}}"',
                    "vms[0].name: {index:>{index}}: a format spec cannot hold a placeholder"),
    "long-digits": ('name: "w-{index:>' + "1" * 5000 + '}"',
                    "vms[0].name: format width or precision in {index:>1111111111111111111…} "
                    f"is over the limit of {MAX_FORMAT_WIDTH}"),
}


@pytest.mark.parametrize("case", WIDTHS, ids=list(WIDTHS))
def test_a_template_width_over_the_limit_is_refused_before_formatting(
    tmp_path: Path, case: str
) -> None:
    keys, error = WIDTHS[case]
    path = write(tmp_path, HEAD + f"  - {keys}\n")
    message, peak = refused(path)
    line = HEAD.count("\n") + 1 + keys.count("\n")  # the line of the last key given
    assert message == f"{path}:{line}: {error}"
    assert peak < 1024 * 1024


def test_a_template_may_use_widths_up_to_the_limit(tmp_path: Path) -> None:
    path = write(tmp_path, HEAD + f'  - name: "w{{index:0{MAX_FORMAT_WIDTH - 2}}}"\n'
                 f'    annotation: "{{name:>{MAX_FORMAT_WIDTH}.{MAX_FORMAT_WIDTH}}}"\n')
    (job,) = load_batch(path).jobs
    assert len(job.name) == MAX_FORMAT_WIDTH - 1
    assert job.options.annotation == job.name.rjust(MAX_FORMAT_WIDTH)


def test_a_rendered_value_over_the_length_limit_is_refused(tmp_path: Path) -> None:
    # 80-character names, 1,000 times over: 80,000 characters from 6,000.
    path = write(tmp_path, HEAD + '  - name: "' + "n" * 76 + '{index:04d}"\n'
                 + "    count: 2\n    properties:\n      banner: \"" + "{name}" * 1000 + '"\n')
    message, _ = refused(path)
    assert message == (f"{path}:7: vms[0].properties.banner: renders to 80000 characters, "
                       f"over the limit of {MAX_RENDERED}")


def csv_with_a_long_cell(tmp_path: Path, size: int) -> Path:
    return write(tmp_path, "name,source,annotation\nc-1,a.ova,short\n"
                 f"c-2,a.ova,{'x' * size}\n", name="rows.csv")


def test_a_csv_cell_over_the_csv_modules_limit_is_one_located_line(tmp_path: Path) -> None:
    path = csv_with_a_long_cell(tmp_path, 1024 * 1024)
    message, _ = refused(path)
    assert message == (f"{path}:3: CSV: a cell is longer than the limit of {MAX_CSV_CELL} "
                       "characters")


def test_the_csv_cell_limit_holds_whatever_the_process_wide_limit(
    tmp_path: Path, limit_raised: Callable[[], None]
) -> None:
    path = csv_with_a_long_cell(tmp_path, MAX_CSV_CELL + 1)
    limit_raised()
    message, _ = refused(path)
    assert message == (f"{path}:3: annotation: CSV: a cell is longer than the limit of "
                       f"{MAX_CSV_CELL} characters")


@pytest.fixture
def limit_raised() -> Iterator[Callable[[], None]]:
    before = csv.field_size_limit()

    def raise_it() -> None:
        csv.field_size_limit(10 * MAX_CSV_CELL)

    yield raise_it
    csv.field_size_limit(before)


def test_loading_leaves_the_process_wide_csv_limit_alone(tmp_path: Path) -> None:
    before = csv.field_size_limit()
    refused(csv_with_a_long_cell(tmp_path, MAX_CSV_CELL + 10))
    assert csv.field_size_limit() == before == MAX_CSV_CELL


ONE_LINE = {
    # inputs that used to end in a traceback on the way to the limits above
    "broken-template-with-count": ('  - name: "w-{"\n    count: 2\n',
                                   ":4: vms[0].name: bad template 'w-{': Single '{' "
                                   "encountered in format string"),
    "superscript-count": ('  - name: "w-{index}"\n    count: "²"\n',
                          ":5: vms[0].count: must be a positive integer"),
}


@pytest.mark.parametrize("case", ONE_LINE, ids=list(ONE_LINE))
def test_odd_input_near_the_limits_is_one_line_not_a_traceback(
    tmp_path: Path, case: str
) -> None:
    entry, error = ONE_LINE[case]
    path = write(tmp_path, HEAD + entry)
    message, _ = refused(path)
    assert message == f"{path}{error}"


def test_a_file_of_too_many_tiny_values_is_refused_at_the_node_limit(tmp_path: Path,
                                                                     composed: list[int]) -> None:
    """No alias and no deep nesting, just many values: refused once the limit is
    passed. The work is bounded by the values composed; the whole process's peak
    for this file (the issue's bound: 200 MiB) is measured through the command
    line by tests/integration/test_hostile_input_peak_memory.py, not here under
    tracemalloc, which makes composing 100,000 values take 25 s."""
    path = write(tmp_path, HEAD + "  - name: a\n    properties: {big: ["
                 + "a," * MAX_YAML_NODES + "a]}\n")
    with pytest.raises(BatchError) as caught:
        load_batch(path)
    message = str(caught.value)
    assert message == (f"{path}:5: YAML: more than {MAX_YAML_NODES} values in one file; list "
                       "larger fleets with count or vms_csv")
    assert composed[0] == MAX_YAML_NODES + 1  # stopped at the first value past the limit


@pytest.mark.anyio
async def test_reading_a_large_batch_in_a_thread_stops_when_its_task_is_cancelled(
    tmp_path: Path,
) -> None:
    """Ctrl-C during validation: the reading thread checks in now and then, and stops
    at the first check after its task is cancelled, not when the file is done."""
    from functools import partial

    import anyio

    rows = tmp_path / "rows.csv"
    rows.write_text("name,source\n" + "".join(f"vm-{i},a.ova\n" for i in range(50_000)))
    checks: list[int] = []
    cancelled = anyio.Event()

    def checkpoint() -> None:
        checks.append(1)
        if len(checks) == 3:  # well into the file: cancel the task reading it
            anyio.from_thread.run_sync(cancelled.set)
            anyio.from_thread.run_sync(scope.cancel)
        anyio.from_thread.check_cancelled()

    with anyio.CancelScope() as scope:
        await anyio.to_thread.run_sync(partial(load_batch, rows, checkpoint=checkpoint))
    assert scope.cancelled_caught and cancelled.is_set()
    assert len(checks) == 3  # stopped at the check that saw the cancellation
    assert len(checks) * 1024 < 50_000 * 2  # far from the rows and jobs a full read checks
