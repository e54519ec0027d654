"""``asyncovf`` is the library's one import: every supported name, lazily, as the README says.

``import asyncovf`` must stay light — the command line installs its signal
handling before pyVmomi, aiohttp and lxml load — so each name is imported on
first use; these tests hold the list, the README and the errors module to it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import asyncovf
import asyncovf.errors

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
LIBRARY_SECTION = "## The same as a library"
HEAVY = ("pyVmomi", "aiohttp", "lxml")


def library_section() -> str:
    """The README's library section, from its heading to the next one of its level."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n{LIBRARY_SECTION}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else len(text)]


def documented_names(section: str) -> list[str]:
    """The names in the first column of the section's table (one or more per row)."""
    names = []
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        first_cell = line.split("|")[1]
        names.extend(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", first_cell))
    return names


def test_every_error_class_of_the_errors_module_is_public() -> None:
    errors = [name for name, value in vars(asyncovf.errors).items()
              if inspect.isclass(value) and issubclass(value, asyncovf.errors.AsyncOvfError)
              and value.__module__ == asyncovf.errors.__name__]
    assert "AsyncOvfError" in errors
    missing = sorted(set(errors) - set(asyncovf.__all__))
    assert not missing, f"add to asyncovf.__all__ (and the README's table): {missing}"


@pytest.mark.parametrize("name", asyncovf.__all__)
def test_every_public_name_resolves_to_the_object_where_it_lives(name: str) -> None:
    module = importlib.import_module(asyncovf._EXPORTS[name])
    assert getattr(asyncovf, name) is getattr(module, name)
    assert name in dir(asyncovf)


def test_the_public_names_and_where_they_live_are_one_list() -> None:
    assert len(asyncovf.__all__) == len(set(asyncovf.__all__))
    assert set(asyncovf.__all__) == set(asyncovf._EXPORTS)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'Improter'"):
        _ = asyncovf.Improter  # type: ignore[attr-defined]


def test_import_asyncovf_loads_neither_pyvmomi_nor_aiohttp_nor_lxml() -> None:
    # A fresh interpreter: this one has imported them all already.
    probe = ("import sys, asyncovf; "
             f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout


def test_the_version_is_the_installed_distributions() -> None:
    assert asyncovf.__version__ == importlib.metadata.version("asyncovf")


def test_the_readme_documents_exactly_the_public_names() -> None:
    names = documented_names(library_section())
    assert len(names) == len(set(names)), "a name is documented twice"
    assert sorted(names) == sorted(asyncovf.__all__)
