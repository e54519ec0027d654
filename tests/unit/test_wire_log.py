"""The SOAP wire log's redaction, cap and files, with requests as pyVmomi writes them."""

from __future__ import annotations

import stat
from pathlib import Path

from pyVmomi import vim

from asyncovf.engine.pull import PullFile
from asyncovf.vsphere.soap import Endpoint, SoapClient
from asyncovf.vsphere.wirelog import REDACTED, WireLog, capped, redact, redact_headers

PASSWORD = "pa<ss>&'word\"1"


def client() -> SoapClient:
    return SoapClient(Endpoint.parse("vc.invalid"))


def test_logins_password_is_redacted_however_pyvmomi_escaped_it() -> None:
    body = client().serialize(vim.SessionManager("SessionManager"), "Login",
                              userName="ops", password=PASSWORD).decode()
    assert "pa&lt;ss&gt;" in body  # what the wire carries
    logged = redact(body)
    assert ">ops</userName>" in logged
    assert f">{REDACTED}</password>" in logged
    assert "pa&lt;ss" not in logged and "word&quot;" not in logged and "word\"" not in logged


def test_the_session_key_of_logins_answer_and_a_tickets_are_redacted() -> None:
    answer = ('<soapenv:Body><LoginResponse xmlns="urn:vim25"><returnval><key>52f1-secret'
              '</key><userName>ops</userName></returnval></LoginResponse></soapenv:Body>')
    assert redact(answer) == answer.replace("52f1-secret", REDACTED)
    ticket = ('<AcquireCloneTicketResponse xmlns="urn:vim25"><returnval>cst-VCT-52'
              '</returnval></AcquireCloneTicketResponse>')
    assert "cst-VCT-52" not in redact(ticket)
    # Elsewhere a key is data (a device's, an option's): it stays.
    other = "<RetrievePropertiesExResponse><key>2000</key></RetrievePropertiesExResponse>"
    assert redact(other) == other


def test_a_saml_token_in_the_ws_security_header_is_redacted() -> None:
    body = ('<soapenv:Header><wsse:Security xmlns:wsse="x"><saml2:Assertion ID="a">'
            '<saml2:Subject>ops</saml2:Subject></saml2:Assertion></wsse:Security>'
            '</soapenv:Header><soapenv:Body><LoginByToken/></soapenv:Body>')
    logged = redact(body)
    assert "saml2:Subject" not in logged and REDACTED in logged
    assert "<LoginByToken/>" in logged


def test_the_headers_a_pull_passes_to_its_source_keep_their_names_not_their_values() -> None:
    source = PullFile(device_id="/vm/disk:0", url="https://mirror/web.ova",
                      member_name="disk1.vmdk", size=10, create=False,
                      headers=(("Authorization", "Basic b3BzOnMzY3JldA=="),)).source_file()
    speaking = client()
    speaking.use_api_version("6.7")  # pull mode's
    body = speaking.serialize(vim.HttpNfcLease("lease-1"), "PullFromUrls",
                              files=[source]).decode()
    assert "b3BzOnMzY3JldA==" in body
    logged = redact(body)
    assert "b3BzOnMzY3JldA==" not in logged
    assert "<key>Authorization</key>" in logged and "https://mirror/web.ova" in logged


def test_the_session_cookie_is_redacted_in_both_directions() -> None:
    assert redact_headers([("Cookie", 'vmware_soap_session="52abc"'),
                           ("Set-Cookie", "vmware_soap_session=52abc; Path=/; HttpOnly"),
                           ("SOAPAction", "urn:vim25/8.0")]) == [
        f"Cookie: vmware_soap_session={REDACTED}",
        f"Set-Cookie: vmware_soap_session={REDACTED}; Path=/; HttpOnly",
        "SOAPAction: urn:vim25/8.0"]


def test_a_long_body_is_cut_and_says_by_how_much() -> None:
    assert capped("x" * 10, 10) == "x" * 10
    assert capped("x" * 15, 10) == "x" * 10 + "\n… (5 more characters not logged)"


def test_each_log_is_a_file_of_its_own_readable_by_its_owner_only(tmp_path: Path) -> None:
    directory = tmp_path / "wire"
    logs = [WireLog(directory, max_body=100) for _ in range(2)]
    for number, log in enumerate(logs):
        log.record("Login", "https://vc/sdk", {"Cookie": "vmware_soap_session=s3"},
                   f"<password>{PASSWORD}</password>".encode(), status=200,
                   answer_headers=[("Set-Cookie", "vmware_soap_session=s4; Path=/")],
                   answer=b"<ok/>" + b"y" * 500, seconds=0.01 * number)
        log.record("Logout", "https://vc/sdk", {}, b"<Logout/>", status=None,
                   answer_headers=[], answer=None, seconds=1.0, error="connection reset")
        log.close()
    assert len({log.path for log in logs}) == 2
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for log in logs:
        assert stat.S_IMODE(log.path.stat().st_mode) == 0o600
        text = log.path.read_text()
        assert PASSWORD not in text and "s3" not in text and "s4" not in text
        assert " #1 Login POST https://vc/sdk" in text and "--- HTTP 200 after" in text
        assert "… (405 more characters not logged)" in text
        assert "--- no answer: connection reset after 1000.0 ms" in text
