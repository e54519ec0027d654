"""Where the connection settings come from: flags, then a batch file's ``connection:``,
then VSPHERE_*, govc's GOVC_* and Ansible's VMWARE_* variables, each setting on its
own; on a terminal, the password prompt. A password is never shown."""

from __future__ import annotations

import getpass as getpass_module
import sys
from pathlib import Path

import pytest

from asyncovf.cli.groups import connection_settings
from asyncovf.cli.parser import build_parser
from asyncovf.errors import UsageError
from asyncovf.vsphere.connection import ConnectionSettings

VSPHERE = {"VSPHERE_SERVER": "vs.example", "VSPHERE_USER": "vs-user",
           "VSPHERE_PASSWORD": "vs-secret"}
GOVC = {"GOVC_URL": "https://govc.example/sdk", "GOVC_USERNAME": "govc-user",
        "GOVC_PASSWORD": "govc-secret"}
ANSIBLE = {"VMWARE_HOST": "ansible.example", "VMWARE_USER": "ansible-user",
           "VMWARE_PASSWORD": "ansible-secret"}


def settings(environ: dict[str, str], **options: object) -> ConnectionSettings:
    return ConnectionSettings.from_options(environ=environ, **options)  # type: ignore[arg-type]


def credentials(value: ConnectionSettings) -> tuple[str, str, str]:
    return value.server, value.username, value.password


@pytest.mark.parametrize(("environ", "expected"), [
    ({**ANSIBLE, **GOVC, **VSPHERE}, ("vs.example", "vs-user", "vs-secret")),
    ({**ANSIBLE, **GOVC}, ("https://govc.example/sdk", "govc-user", "govc-secret")),
    (ANSIBLE, ("ansible.example", "ansible-user", "ansible-secret")),
], ids=["vsphere-first", "then-govc", "then-ansible"])
def test_each_tools_variables_are_read_in_order_vsphere_govc_ansible(
    environ: dict[str, str], expected: tuple[str, str, str]
) -> None:
    assert credentials(settings(environ)) == expected


def test_each_setting_falls_back_on_its_own() -> None:
    environ = {"VSPHERE_SERVER": "vs.example", "GOVC_USERNAME": "govc-user",
               "VMWARE_PASSWORD": "ansible-secret"}
    assert credentials(settings(environ)) == ("vs.example", "govc-user", "ansible-secret")


def test_flags_win_over_every_variable() -> None:
    environ = {**ANSIBLE, **GOVC, **VSPHERE, "VSPHERE_ALLOW_UNVERIFIED_SSL": "false"}
    value = settings(environ, server="flag.example", username="flag-user",
                     password="flag-secret", insecure=True)
    assert credentials(value) == ("flag.example", "flag-user", "flag-secret")
    assert value.insecure


def test_govc_url_credentials_are_taken_out_of_the_server_and_win_over_govc_username() -> None:
    environ = {"GOVC_URL": "https://admin%40vsphere.local:p%3Ass@govc.example:8443/sdk",
               "GOVC_USERNAME": "other", "GOVC_PASSWORD": "other"}
    value = settings(environ)
    assert credentials(value) == ("https://govc.example:8443/sdk", "admin@vsphere.local", "p:ss")
    assert value.endpoint().url == "https://govc.example:8443/sdk"
    assert "p:ss" not in repr(value) and "p%3Ass" not in repr(value)


def test_a_govc_url_without_a_scheme_is_a_host() -> None:
    value = settings({"GOVC_URL": "user:pw@govc.example"})
    assert credentials(value) == ("https://govc.example", "user", "pw")


@pytest.mark.parametrize(("environ", "insecure"), [
    ({}, False),
    ({"GOVC_INSECURE": "1"}, True),
    ({"GOVC_INSECURE": "true"}, True),
    ({"GOVC_INSECURE": "0"}, False),
    ({"VMWARE_VALIDATE_CERTS": "false"}, True),
    ({"VMWARE_VALIDATE_CERTS": "no"}, True),
    ({"VMWARE_VALIDATE_CERTS": "0"}, True),
    ({"VMWARE_VALIDATE_CERTS": "true"}, False),
    ({"VSPHERE_ALLOW_UNVERIFIED_SSL": "false", "GOVC_INSECURE": "1"}, False),
    ({"GOVC_INSECURE": "false", "VMWARE_VALIDATE_CERTS": "false"}, False),
    ({"VSPHERE_ALLOW_UNVERIFIED_SSL": "true", "VMWARE_VALIDATE_CERTS": "true"}, True),
])
def test_insecure_comes_from_the_first_variable_set(environ: dict[str, str],
                                                    insecure: bool) -> None:
    assert settings({**VSPHERE, **environ}).insecure is insecure


def test_the_ca_file_variable_is_read_and_a_flag_wins_over_it(tmp_path: Path) -> None:
    from_variable, from_flag = tmp_path / "variable.pem", tmp_path / "flag.pem"
    from_variable.write_text("")
    from_flag.write_text("")
    environ = {**VSPHERE, "VSPHERE_CA_FILE": str(from_variable)}
    assert settings(environ).ca_file == str(from_variable)
    assert settings(environ, ca_file=str(from_flag)).ca_file == str(from_flag)


def test_a_missing_ca_file_from_the_variable_is_named_as_the_variable(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(UsageError) as raised:
        settings({**VSPHERE, "VSPHERE_CA_FILE": str(missing)})
    assert str(raised.value) == f"VSPHERE_CA_FILE {missing}: no such file"


def test_what_is_missing_names_the_flag_and_every_variable_read() -> None:
    with pytest.raises(UsageError) as raised:
        settings({"GOVC_USERNAME": "u"})
    assert str(raised.value) == (
        "missing --server (or VSPHERE_SERVER, GOVC_URL, VMWARE_HOST); "
        "--password (or VSPHERE_PASSWORD, GOVC_PASSWORD, VMWARE_PASSWORD)")


def test_the_password_is_asked_for_only_when_nothing_gives_it() -> None:
    asked: list[tuple[str, str]] = []

    def ask(server: str, user: str) -> str:
        asked.append((server, user))
        return "typed"

    environ = {"VSPHERE_SERVER": "vs.example", "VSPHERE_USER": "u"}
    assert settings(environ, ask_password=ask).password == "typed"
    assert asked == [("vs.example", "u")]
    assert settings({**environ, "GOVC_PASSWORD": "set"}, ask_password=ask).password == "set"
    assert len(asked) == 1


def args_for(*argv: str) -> object:
    return build_parser().parse_args(["cleanup", "report.json", *argv])


def test_the_command_line_prompts_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    prompts: list[str] = []

    def getpass(text: str) -> str:
        prompts.append(text)
        return "typed"

    for name in ("VSPHERE_PASSWORD", "GOVC_PASSWORD", "VMWARE_PASSWORD", "GOVC_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(getpass_module, "getpass", getpass)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    value = connection_settings(args_for("--server", "vs.example", "--user", "u"))  # type: ignore[arg-type]
    assert value.password == "typed"
    assert prompts == ["password for u at vs.example: "]


def test_the_command_line_does_not_prompt_without_a_terminal(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    def getpass(text: str) -> str:
        raise AssertionError("prompted without a terminal")

    for name in ("VSPHERE_PASSWORD", "GOVC_PASSWORD", "VMWARE_PASSWORD", "GOVC_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(getpass_module, "getpass", getpass)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False)
    with pytest.raises(UsageError, match="missing --password"):
        connection_settings(args_for("--server", "vs.example", "--user", "u"))  # type: ignore[arg-type]
