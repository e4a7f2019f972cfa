"""The E-Port enveloped XML-DSig profile on lxml's C14N.

Signature = last child of the root; inclusive C14N 1.0; one Reference URI="" with the enveloped-signature
transform; KeyInfo = KeyName (certificate number) then X509Data/X509Certificate. The signature is spliced in
before the root's end tag, so the document's own bytes (whitespace, quoting, declaration) stay as they were:
inclusive C14N digests them as written.
"""

from __future__ import annotations

import base64
import datetime as dt
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from lxml import etree

from . import errors
from .algorithms import BY_URI as ALGORITHMS_BY_URI
from .algorithms import DSIG, SignatureAlgorithm, algorithm, signing_algorithm
from .certificates import certificate_der, certificate_number, load_certificate, utcnow, verify_signature

C14N = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
ENVELOPED = f"{DSIG}enveloped-signature"
_NS = {"ds": DSIG}
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, remove_blank_text=False, huge_tree=False)
log = logging.getLogger(__name__)


class DocumentSigner(Protocol):
    def certificate(self) -> x509.Certificate: ...

    def sign(self, data: bytes, algorithm: SignatureAlgorithm) -> bytes: ...


@dataclass(frozen=True)
class VerifiedSignature:
    certificate: x509.Certificate
    certificate_number: str
    algorithm: str
    signed_bytes: bytes
    """The canonical document without its signature: exactly what the digest covers."""


def _parse(xml: bytes) -> etree._ElementTree:
    try:
        return etree.fromstring(xml, _PARSER).getroottree()
    except etree.XMLSyntaxError as exc:
        raise errors.SignatureMalformed(f"not well-formed XML: {exc}") from None


def _c14n(node: etree._Element | etree._ElementTree) -> bytes:
    return etree.tostring(node, method="c14n", exclusive=False, with_comments=False)


def _ds(parent: etree._Element, tag: str, text: str | None = None, **attrib: str) -> etree._Element:
    element = etree.SubElement(parent, f"{{{DSIG}}}{tag}", attrib)
    element.text = text
    return element


def sign_document(xml: bytes, signer: DocumentSigner, algorithm: str = "rsa-sha256") -> bytes:
    """Return `xml` with an enveloped E-Port signature as the root's last child."""
    method = signing_algorithm(algorithm)
    tree = _parse(xml)
    root = tree.getroot()
    if root.find("ds:Signature", _NS) is not None:
        raise errors.SignatureMalformed("the document is already signed")
    digest = method.reference_digest.compute(_c14n(tree))
    cert = signer.certificate()

    signature = etree.SubElement(root, f"{{{DSIG}}}Signature", nsmap={"ds": DSIG})
    signed_info = _ds(signature, "SignedInfo")
    _ds(signed_info, "CanonicalizationMethod", Algorithm=C14N)
    _ds(signed_info, "SignatureMethod", Algorithm=method.uri)
    reference = _ds(signed_info, "Reference", URI="")
    _ds(_ds(reference, "Transforms"), "Transform", Algorithm=ENVELOPED)
    _ds(reference, "DigestMethod", Algorithm=method.reference_digest.uri)
    _ds(reference, "DigestValue", base64.b64encode(digest).decode())
    value = signer.sign(_c14n(signed_info), method)
    _ds(signature, "SignatureValue", base64.b64encode(value).decode())
    key_info = _ds(signature, "KeyInfo")
    _ds(key_info, "KeyName", certificate_number(cert))
    _ds(_ds(key_info, "X509Data"), "X509Certificate", base64.b64encode(certificate_der(cert)).decode())
    return _splice(xml, root, signature)


def _splice(xml: bytes, root: etree._Element, signature: etree._Element) -> bytes:
    """Insert the serialised signature before the root's end tag, leaving every other byte alone."""
    signature_bytes = etree.tostring(signature)
    name = (f"{root.prefix}:" if root.prefix else "") + etree.QName(root).localname
    end_tag = xml.rfind(b"</" + name.encode("utf-8"))
    if end_tag < 0:  # a self-closing root, or an encoding that is not ASCII-compatible
        tree = root.getroottree()
        declared = xml.lstrip().startswith(b"<?xml")
        serialised = etree.tostring(tree, encoding=tree.docinfo.encoding, xml_declaration=declared)
        assert isinstance(serialised, bytes)  # an encoding was given
        return serialised
    return xml[:end_tag] + signature_bytes + xml[end_tag:]


def _one(parent: etree._Element, path: str) -> etree._Element:
    found = parent.findall(path, _NS)
    if len(found) != 1:
        raise errors.SignatureMalformed(f"expected exactly one {path}, found {len(found)}")
    return found[0]


def _b64(element: etree._Element) -> bytes:
    try:
        return base64.b64decode("".join((element.text or "").split()), validate=True)
    except ValueError:
        raise errors.SignatureMalformed(f"{etree.QName(element).localname} is not base64") from None


def _find_certificate(signature: etree._Element, trusted: list[x509.Certificate]) -> x509.Certificate:
    embedded = signature.find("ds:KeyInfo/ds:X509Data/ds:X509Certificate", _NS)
    if embedded is not None:
        der = _b64(embedded)
        for cert in trusted:
            if certificate_der(cert) == der:
                return cert
        try:
            number = certificate_number(load_certificate(der))
        except ValueError:
            raise errors.SignatureMalformed("X509Certificate is not a certificate") from None
        raise errors.CertificateUnknown(f"certificate {number} is not trusted for this partner")
    key_name = signature.findtext("ds:KeyInfo/ds:KeyName", namespaces=_NS)
    for cert in trusted:
        if key_name and certificate_number(cert) == key_name.strip().lower():
            return cert
    raise errors.CertificateUnknown(f"certificate {key_name} is not trusted for this partner")


def _remove_keeping_tail(element: etree._Element) -> None:
    """Drop the element; the text after it stays, as in the enveloped-signature transform."""
    parent = element.getparent()
    assert parent is not None
    if element.tail:
        previous = element.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or "") + element.tail
        else:
            parent.text = (parent.text or "") + element.tail
    parent.remove(element)


def verify_document(
    xml: bytes,
    trusted_certs: Iterable[x509.Certificate | bytes],
    *,
    now: dt.datetime | None = None,
    require: bool = True,
) -> VerifiedSignature | None:
    """Check the document's enveloped signature against the partner's trusted certificates.

    Returns None only when the document carries no signature and `require` is false. Raises a
    VerificationError subclass with its code otherwise.
    """
    trusted = [c if isinstance(c, x509.Certificate) else load_certificate(c) for c in trusted_certs]
    tree = _parse(xml)
    root = tree.getroot()
    signatures = root.findall("ds:Signature", _NS)
    if not signatures:
        if require:
            raise errors.SignatureMissing("the document carries no ds:Signature")
        return None
    signature = signatures[-1]
    if len(signatures) > 1 or signature is not root[len(root) - 1]:
        raise errors.SignatureMalformed("the signature must be the root's only and last ds:Signature")

    signed_info = _one(signature, "ds:SignedInfo")
    if _one(signed_info, "ds:CanonicalizationMethod").get("Algorithm") != C14N:
        raise errors.AlgorithmUnsupported("only inclusive C14N 1.0 is accepted")
    method_uri = _one(signed_info, "ds:SignatureMethod").get("Algorithm", "")
    method = ALGORITHMS_BY_URI.get(method_uri)
    if method is None:
        raise errors.AlgorithmUnsupported(f"signature method {method_uri}")
    reference = _one(signed_info, "ds:Reference")
    transforms = [t.get("Algorithm") for t in reference.findall("ds:Transforms/ds:Transform", _NS)]
    if reference.get("URI") != "" or transforms not in ([ENVELOPED], [ENVELOPED, C14N]):
        raise errors.SignatureMalformed('expected Reference URI="" with the enveloped-signature transform')
    digest_uri = _one(reference, "ds:DigestMethod").get("Algorithm")
    if digest_uri != method.reference_digest.uri:
        raise errors.AlgorithmUnsupported(f"digest {digest_uri} with {method_uri}")
    expected_digest = _b64(_one(reference, "ds:DigestValue"))
    signature_value = _b64(_one(signature, "ds:SignatureValue"))
    cert = _find_certificate(signature, trusted)

    signed_info_c14n = _c14n(signed_info)
    _remove_keeping_tail(signature)
    document = _c14n(tree)
    if method.reference_digest.compute(document) != expected_digest:
        raise errors.SignatureInvalid("the document's digest does not match: it was changed after signing")
    if not verify_signature(cert, method, signed_info_c14n, signature_value):
        raise errors.SignatureInvalid("the signature value does not match the signed info and certificate")

    now = now or utcnow()
    number = certificate_number(cert)
    if now > cert.not_valid_after_utc:
        raise errors.CertificateExpired(f"certificate {number} expired {cert.not_valid_after_utc:%Y-%m-%d}")
    if now < cert.not_valid_before_utc:
        raise errors.CertificateNotYetValid(
            f"certificate {number} is valid from {cert.not_valid_before_utc:%Y-%m-%d}"
        )
    log.debug("signature verified: certificate %s, %s", number, method.name)
    return VerifiedSignature(cert, number, method.name, document)


__all__ = ["DocumentSigner", "VerifiedSignature", "algorithm", "sign_document", "verify_document"]
