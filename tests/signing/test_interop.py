"""Independent implementations agree with the hub: xmlsec1 for RSA, the openssl 3 CLI for SM2 (the hub signs
SM2 with gmssl's curve arithmetic)."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest
from lxml import etree

from hub.signing import der, errors
from hub.signing.profile import sign_document, verify_document

from .conftest import FIXTURES, declared_message, need_tool

DSIG = "http://www.w3.org/2000/09/xmldsig#"
C14N = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
ECI = "urn:sw-eci-hub:insurer:1"


def run(*args: str, stdin: bytes | None = None) -> bytes:
    return subprocess.run(args, input=stdin, check=True, capture_output=True).stdout


# ---------------------------------------------------------------- RSA with xmlsec1


@pytest.mark.parametrize("algorithm", ["rsa-sha256", "rsa-sha1"])
def test_xmlsec1_verifies_hub_rsa_signatures(algorithm, rsa_signer, tmp_path):
    xmlsec1 = need_tool("xmlsec1")
    signed = tmp_path / "signed.xml"
    signed.write_bytes(sign_document(declared_message(), rsa_signer, algorithm))

    result = subprocess.run(
        [xmlsec1, "--verify", "--pubkey-cert-pem", str(FIXTURES / "pengcheng-rsa.cert.pem"),
         "--enabled-key-data", "x509", str(signed)],
        capture_output=True, text=True,
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert "OK" in result.stderr


def test_xmlsec1_notices_a_tampered_hub_signature(rsa_signer, tmp_path):
    xmlsec1 = need_tool("xmlsec1")
    signed = tmp_path / "signed.xml"
    signed.write_bytes(sign_document(declared_message(), rsa_signer).replace(b"1001.50", b"1002.50"))

    result = subprocess.run(
        [xmlsec1, "--verify", "--pubkey-cert-pem", str(FIXTURES / "pengcheng-rsa.cert.pem"), str(signed)],
        capture_output=True,
    )

    assert result.returncode != 0


def _template(method: str, digest: str) -> bytes:
    signature = (
        f'<ds:Signature xmlns:ds="{DSIG}"><ds:SignedInfo>'
        f'<ds:CanonicalizationMethod Algorithm="{C14N}"/><ds:SignatureMethod Algorithm="{method}"/>'
        f'<ds:Reference URI=""><ds:Transforms><ds:Transform Algorithm="{DSIG}enveloped-signature"/>'
        f'</ds:Transforms><ds:DigestMethod Algorithm="{digest}"/><ds:DigestValue/></ds:Reference>'
        "</ds:SignedInfo><ds:SignatureValue/><ds:KeyInfo><ds:KeyName>01a2b3c4</ds:KeyName>"
        "<ds:X509Data><ds:X509Certificate/></ds:X509Data></ds:KeyInfo></ds:Signature>"
    )
    return declared_message().replace(b"</eci:ECI101Message>", signature.encode() + b"</eci:ECI101Message>")


@pytest.mark.parametrize(
    ("method", "digest", "expected"),
    [
        (
            "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
            "http://www.w3.org/2001/04/xmlenc#sha256",
            "rsa-sha256",
        ),
        (f"{DSIG}rsa-sha1", f"{DSIG}sha1", "rsa-sha1"),
    ],
)
def test_hub_verifies_signatures_made_by_xmlsec1(method, digest, expected, trusted, tmp_path):
    xmlsec1 = need_tool("xmlsec1")
    template = tmp_path / "template.xml"
    template.write_bytes(_template(method, digest))
    key = f"{FIXTURES / 'pengcheng-rsa.key.pem'},{FIXTURES / 'pengcheng-rsa.cert.pem'}"

    signed = run(xmlsec1, "--sign", "--privkey-pem", key, str(template))

    verified = verify_document(signed, trusted)
    assert verified is not None and verified.algorithm == expected
    with pytest.raises(errors.SignatureInvalid):
        verify_document(signed.replace(b"INV-2024", b"INV-2025", 1), trusted)


# ---------------------------------------------------------------- SM2 with the openssl CLI


def _raw_to_der(raw: bytes) -> bytes:
    r, s = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    return der.encode(der.SEQUENCE, der.encode_integer(r) + der.encode_integer(s))


def _der_to_raw(signature: bytes) -> bytes:
    _tag, body, _end = der.read_tlv(signature)
    r, s = (int.from_bytes(v, "big") for _t, v, _w in der.children(body))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _openssl_sm2(action: str, message: Path, *extra: str) -> subprocess.CompletedProcess[bytes]:
    key = (
        ["-inkey", str(FIXTURES / "xinghe-sm2.key.pem")]
        if action == "-sign"
        else ["-certin", "-inkey", str(FIXTURES / "xinghe-sm2.cert.pem")]
    )
    return subprocess.run(
        ["openssl", "pkeyutl", action, "-rawin", "-digest", "sm3", "-pkeyopt", "distid:1234567812345678",
         *key, "-in", str(message), *extra],
        capture_output=True,
    )  # fmt: skip


def test_openssl_verifies_hub_sm2_signatures(sm2_signer, tmp_path):
    need_tool("openssl")
    xmllint = need_tool("xmllint")
    original = declared_message()
    signed = sign_document(original, sm2_signer, "sm2-sm3")
    root = etree.fromstring(signed)
    ns = {"ds": DSIG}
    # The document digest: xmllint's canonical form of the document as it was, SM3 from openssl.
    (tmp_path / "original.xml").write_bytes(original)
    canonical = run(xmllint, "--c14n", str(tmp_path / "original.xml"))
    digest = run("openssl", "dgst", "-sm3", "-binary", stdin=canonical)
    assert base64.b64decode(root.findtext(".//ds:DigestValue", namespaces=ns)) == digest
    # The signature over SignedInfo, checked by openssl's SM2 against the certificate's key.
    signed_info = etree.tostring(root.find("ds:Signature/ds:SignedInfo", ns), method="c14n")
    (tmp_path / "signed_info").write_bytes(signed_info)
    value = base64.b64decode(root.findtext("ds:Signature/ds:SignatureValue", namespaces=ns))
    assert len(value) == 64
    (tmp_path / "sig.der").write_bytes(_raw_to_der(value))

    good = _openssl_sm2("-verify", tmp_path / "signed_info", "-sigfile", str(tmp_path / "sig.der"))
    (tmp_path / "signed_info").write_bytes(signed_info.replace(b"sm3", b"sm4"))
    bad = _openssl_sm2("-verify", tmp_path / "signed_info", "-sigfile", str(tmp_path / "sig.der"))

    assert good.returncode == 0, good.stderr
    assert bad.returncode != 0


def _canonical_signed_info(method: str, digest_uri: str, digest: bytes) -> bytes:
    """SignedInfo written by hand in C14N form: in-scope namespaces sorted, empty elements as pairs."""
    return (
        f'<ds:SignedInfo xmlns:ds="{DSIG}" xmlns:eci="{ECI}">'
        f'<ds:CanonicalizationMethod Algorithm="{C14N}"></ds:CanonicalizationMethod>'
        f'<ds:SignatureMethod Algorithm="{method}"></ds:SignatureMethod>'
        f'<ds:Reference URI=""><ds:Transforms><ds:Transform Algorithm="{DSIG}enveloped-signature">'
        f'</ds:Transform></ds:Transforms><ds:DigestMethod Algorithm="{digest_uri}"></ds:DigestMethod>'
        f"<ds:DigestValue>{base64.b64encode(digest).decode()}</ds:DigestValue></ds:Reference></ds:SignedInfo>"
    ).encode()


@pytest.mark.parametrize(
    ("method", "digest_uri", "openssl_digest", "expected"),
    [
        ("http://www.chinaport.gov.cn/2022/04/xmldsig#sm2-sm3", "http://www.chinaport.gov.cn/2022/04/xmldsig#sm3",
         "-sm3", "sm2-sm3"),
        (f"{DSIG}sm2-sm3", f"{DSIG}sha1", "-sha1", "sm2-sm3-w3c"),
    ],
)  # fmt: skip
def test_hub_verifies_sm2_signatures_made_by_openssl(
    method, digest_uri, openssl_digest, expected, trusted, tmp_path
):
    need_tool("openssl")
    xmllint = need_tool("xmllint")
    original = declared_message()
    (tmp_path / "original.xml").write_bytes(original)
    digest = run(
        "openssl",
        "dgst",
        openssl_digest,
        "-binary",
        stdin=run(xmllint, "--c14n", str(tmp_path / "original.xml")),
    )
    signed_info = _canonical_signed_info(method, digest_uri, digest)
    (tmp_path / "signed_info").write_bytes(signed_info)
    made = _openssl_sm2("-sign", tmp_path / "signed_info")
    assert made.returncode == 0, made.stderr
    certificate = b"".join(
        line
        for line in (FIXTURES / "xinghe-sm2.cert.pem").read_bytes().splitlines()
        if not line.startswith(b"-----")
    )
    signature = (
        f'<ds:Signature xmlns:ds="{DSIG}">'.encode()
        + signed_info.replace(f' xmlns:ds="{DSIG}" xmlns:eci="{ECI}"'.encode(), b"")
        + b"<ds:SignatureValue>" + base64.b64encode(_der_to_raw(made.stdout)) + b"</ds:SignatureValue>"
        + b"<ds:KeyInfo><ds:KeyName>02b3c4d5</ds:KeyName><ds:X509Data><ds:X509Certificate>" + certificate
        + b"</ds:X509Certificate></ds:X509Data></ds:KeyInfo></ds:Signature>"
    )  # fmt: skip
    signed = original.replace(b"</eci:ECI101Message>", signature + b"</eci:ECI101Message>")

    verified = verify_document(signed, trusted)

    assert verified is not None and verified.algorithm == expected
    with pytest.raises(errors.SignatureInvalid):
        verify_document(signed.replace(b"1001.50", b"1001.51"), trusted)
