"""The corpus's security and negative fixtures: each refused, with the reason, before
anything would reach vCenter (these tests have no vCenter to reach)."""

from __future__ import annotations

import pytest

from asyncovf.errors import PackageError
from asyncovf.ovf.package import check_files
from asyncovf.ovf.source import open_package
from tests.corpus import corpus_file

pytestmark = pytest.mark.anyio

SECURITY = "external/security-test-content/ovf"
NEGATIVE = "external/ovf_negative_test"


@pytest.mark.parametrize(
    ("relative", "message"),
    [
        (f"{SECURITY}/negative-size-disk/haoUnOS2VMs.ovf",
         "file 'haoUnOS2VMs-disk1.vmdk': size='-9223372036854775807' is negative"),
        (f"{SECURITY}/negative-out-of-bound-disk/haoUnOS2VMs.ovf",
         "file 'haoUnOS2VMs-disk1.vmdk': size='-9223372036854775809' is negative"),
        (f"{SECURITY}/out-of-bounds-disk/haoUnOS2VMs.ovf",
         "file 'haoUnOS2VMs-disk1.vmdk': size 9223372036854775808 bytes is not plausible"),
        (f"{SECURITY}/large-disk/haoUnOS2VMs.ovf",
         "file 'haoUnOS2VMs-disk1.vmdk': size 9223372036854775807 bytes is not plausible"),
        (f"{NEGATIVE}/New folder/haoUnOS2VMs/haoUnOS2VMs.ovf", "duplicate virtual system id ''"),
        (f"{NEGATIVE}/ovf_with_wrong_size/haoUnOS2VMs/haoUnOS2VMs.ovf",
         "descriptor references haoUnOS2VMs-disk1.vmdk, which the package does not contain"),
        ("external/ovf_with_missing_vmdk/haoUnOS2VMs.ovf",
         "descriptor references haoUnOS2VMs-disk1.vmdk, which the package does not contain"),
        ("empty.ovf", "descriptor has no VirtualSystem or VirtualSystemCollection"),
        ("external/DeleteHDTestdata/Sass_old/descriptor.ovf",
         "not an OVF descriptor: root element is <HTML> in namespace (none)"),
    ],
    ids=["negative-size", "negative-out-of-bound", "out-of-bounds", "large", "duplicate-id",
         "wrong-size-missing-files", "missing-vmdk", "empty", "html"],
)
async def test_negative_fixture_is_refused_naming_the_file_and_the_problem(
    relative: str, message: str
) -> None:
    path = corpus_file(relative)
    with pytest.raises(PackageError) as caught:
        package = await open_package(path)
        check_files(package)
    text = str(caught.value)
    assert text.startswith(f"{path}: ")
    assert text.endswith(message)
    assert "\n" not in text
