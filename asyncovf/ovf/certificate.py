"""The ``.cert`` of a signed package: does the manifest's signature verify?

DSP0243 (5.3): the certificate file holds a signature of the manifest file,
``ALGO(name.mf)= <hex>``, followed by the signer's X.509 certificate in PEM.
ovftool signs with RSA (PKCS#1 v1.5) over the manifest's bytes.

What we check: the signature verifies with the certificate's public key, over
the manifest this package really has — so a manifest (and, through it, every
file) changed after signing is caught. What we do not check: whether the
signer is someone you trust (no CA chain, no revocation); the report says who
signed and whether the certificate is self-signed or expired, so an operator
can decide.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Final

from asyncovf.errors import PackageError

_SIGNATURE = re.compile(
    rb"^\s*(?P<algo>SHA1|SHA256|SHA512)\s*\((?P<name>[^)]+)\)\s*=\s*(?P<hex>[0-9a-fA-F]+)\s*$",
    re.MULTILINE,
)
_ALGORITHMS: Final = ("SHA1", "SHA256", "SHA512")


@dataclass(frozen=True)
class SignatureCheck:
    """What verifying a package's ``.cert`` showed."""

    valid: bool
    signer: str
    algorithm: str
    self_signed: bool
    expired: bool
    problem: str | None = None

    def describe(self) -> str:
        if not self.valid:
            return f"signature does NOT verify: {self.problem}"
        notes = [f"signed by {self.signer} ({self.algorithm})"]
        if self.self_signed:
            notes.append("self-signed certificate")
        if self.expired:
            notes.append("certificate expired")
        notes.append("signer trust not checked")
        return "signature verifies; " + "; ".join(notes)


def check_signature(certificate: bytes, manifest: bytes, manifest_name: str, *,
                    location: str) -> SignatureCheck:
    """Verify ``certificate`` (the ``.cert`` contents) against ``manifest``'s bytes.

    Raises :class:`PackageError` when the file is not a certificate file at all;
    a well-formed signature that does not verify is returned as ``valid=False``.
    """
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    match = _SIGNATURE.search(certificate)
    if match is None:
        raise PackageError("certificate file has no 'SHA256(name.mf)= signature' line",
                           file=location)
    algorithm = match["algo"].decode()
    signed_name = match["name"].decode("utf-8", "replace").strip()
    try:
        cert = x509.load_pem_x509_certificate(certificate[certificate.index(b"-----BEGIN"):])
        signature = bytes.fromhex(match["hex"].decode())
    except ValueError as exc:
        raise PackageError(f"certificate file is malformed: {exc}", file=location) from exc
    signer = cert.subject.rfc4514_string() or "(no subject)"
    now = datetime.datetime.now(datetime.UTC)
    expired = not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc)
    self_signed = cert.issuer == cert.subject

    def result(problem: str | None) -> SignatureCheck:
        return SignatureCheck(problem is None, signer, algorithm, self_signed, expired, problem)

    if signed_name != manifest_name:
        return result(f"it signs {signed_name}, but the manifest is {manifest_name}")
    digest = {"SHA1": hashes.SHA1(), "SHA256": hashes.SHA256(),
              "SHA512": hashes.SHA512()}[algorithm]
    key = cert.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(signature, manifest, padding.PKCS1v15(), digest)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, manifest, ec.ECDSA(digest))
        else:
            return result(f"unsupported key type {type(key).__name__}")
    except InvalidSignature:
        return result(f"the manifest {manifest_name} was changed after signing, or the "
                      "signature is not from this certificate")
    return result(None)


__all__ = ["SignatureCheck", "check_signature"]
