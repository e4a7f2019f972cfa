"""The E-Port enveloped signature profile: what a partner receives and what the hub accepts."""

from __future__ import annotations

import datetime as dt

import pytest
from lxml import etree

from hub.signing import errors
from hub.signing.algorithms import ALGORITHMS
from hub.signing.certificates import load_certificate
from hub.signing.profile import sign_document, verify_document
from hub.signing.software import SoftwareKeySigner

from .conftest import FIXTURES, declared_message

DS = "{http://www.w3.org/2000/09/xmldsig#}"


@pytest.mark.parametrize("algorithm", ["rsa-sha256", "rsa-sha1", "sm2-sm3"])
def test_signed_message_verifies_and_names_its_certificate(algorithm, rsa_signer, sm2_signer, trusted):
    signer = sm2_signer if algorithm.startswith("sm2") else rsa_signer
    signed = sign_document(declared_message(), signer, algorithm)

    verified = verify_document(signed, trusted)

    assert verified is not None
    assert verified.algorithm == algorithm
    assert verified.certificate == signer.certificate()
    root = etree.fromstring(signed)
    signature = root[-1]
    assert signature.tag == f"{DS}Signature"
    assert signature.find(f"{DS}SignedInfo/{DS}SignatureMethod").get("Algorithm") == ALGORITHMS[algorithm].uri
    key_info = signature.find(f"{DS}KeyInfo")
    assert [child.tag for child in key_info] == [f"{DS}KeyName", f"{DS}X509Data"]
    assert (
        key_info[0].text
        == verified.certificate_number
        == ("02b3c4d5" if algorithm == "sm2-sm3" else "01a2b3c4")
    )


def test_signing_leaves_every_byte_of_the_document_in_place(rsa_signer):
    original = declared_message()
    signed = sign_document(original, rsa_signer)

    start = signed.index(b"<ds:Signature")
    end = signed.index(b"</ds:Signature>") + len(b"</ds:Signature>")
    assert signed[:start] + signed[end:] == original
    assert signed[end:] == b"</eci:ECI101Message>\n"


def test_signed_bytes_are_the_canonical_document_without_its_signature(rsa_signer, trusted):
    original = declared_message()
    verified = verify_document(sign_document(original, rsa_signer), trusted)

    assert verified is not None
    assert verified.signed_bytes == etree.tostring(etree.fromstring(original).getroottree(), method="c14n")


def test_a_changed_character_breaks_the_signature(rsa_signer, trusted):
    signed = sign_document(declared_message(), rsa_signer)
    tampered = signed.replace(b"1001.50", b"9001.50", 1)

    with pytest.raises(errors.SignatureInvalid) as caught:
        verify_document(tampered, trusted)

    assert caught.value.code == "SIGNATURE_INVALID"
    assert caught.value.return_status == -621029


def test_a_changed_signed_info_breaks_the_signature(rsa_signer, trusted):
    signed = sign_document(declared_message(), rsa_signer)
    root = etree.fromstring(signed)
    digest = root.find(f"{DS}Signature/{DS}SignedInfo/{DS}Reference/{DS}DigestValue")
    tampered = signed.replace(digest.text.encode(), b"AAAA" + digest.text[4:].encode())

    with pytest.raises(errors.SignatureInvalid):
        verify_document(tampered, trusted)


def test_a_signature_by_an_unknown_certificate_is_rejected(trusted):
    stranger = SoftwareKeySigner.from_pem(FIXTURES / "lanjing-rsa.key.pem", FIXTURES / "lanjing-rsa.cert.pem")
    signed = sign_document(declared_message(), stranger)

    with pytest.raises(errors.CertificateUnknown) as caught:
        verify_document(signed, trusted)

    assert caught.value.code == "CERTIFICATE_UNKNOWN"
    assert "03c4d5e6" in str(caught.value)


def test_a_signature_by_an_expired_certificate_is_rejected():
    cert = load_certificate(FIXTURES / "pengcheng-rsa-expired.cert.pem")
    signer = SoftwareKeySigner.from_pem(
        FIXTURES / "pengcheng-rsa-expired.key.pem", FIXTURES / "pengcheng-rsa-expired.cert.pem"
    )
    signer._clock = lambda: dt.datetime(2020, 6, 1, tzinfo=dt.UTC)  # signed while it was still valid
    signed = sign_document(declared_message(), signer)

    assert verify_document(signed, [cert], now=dt.datetime(2020, 7, 1, tzinfo=dt.UTC)) is not None
    with pytest.raises(errors.CertificateExpired) as caught:
        verify_document(signed, [cert])
    assert caught.value.code == "CERTIFICATE_EXPIRED"
    assert caught.value.return_status == -621029


def test_a_certificate_not_yet_valid_is_rejected(rsa_signer, trusted):
    signed = sign_document(declared_message(), rsa_signer)

    with pytest.raises(errors.CertificateNotYetValid):
        verify_document(signed, trusted, now=dt.datetime(2024, 12, 31, tzinfo=dt.UTC))


def test_a_missing_signature_is_rejected_only_where_required(trusted):
    with pytest.raises(errors.SignatureMissing) as caught:
        verify_document(declared_message(), trusted)
    assert caught.value.code == "SIGNATURE_MISSING"

    assert verify_document(declared_message(), trusted, require=False) is None


def test_a_signature_that_is_not_the_last_child_is_rejected(rsa_signer, trusted):
    signed = sign_document(declared_message(), rsa_signer)
    moved = signed.replace(b"</eci:ECI101Message>", b"<eci:Late/></eci:ECI101Message>")

    with pytest.raises(errors.SignatureMalformed):
        verify_document(moved, trusted)


def test_the_hub_does_not_sign_twice_or_with_the_field_variant(rsa_signer, sm2_signer):
    with pytest.raises(errors.SignatureMalformed):
        sign_document(sign_document(declared_message(), rsa_signer), rsa_signer)
    with pytest.raises(errors.AlgorithmUnsupported):
        sign_document(declared_message(), sm2_signer, "sm2-sm3-w3c")


def test_a_key_of_the_wrong_type_refuses_the_algorithm(rsa_signer):
    with pytest.raises(errors.SignerAlgorithmUnsupported):
        sign_document(declared_message(), rsa_signer, "sm2-sm3")


def test_documents_with_a_default_namespace_and_no_declaration_round_trip(rsa_signer, trusted):
    document = b'<Message xmlns="urn:x"><A  b="1">text</A>\r\n<B/></Message>'
    signed = sign_document(document, rsa_signer)

    assert signed.startswith(b'<Message xmlns="urn:x"><A  b="1">text</A>\r\n<B/>')
    assert verify_document(signed, trusted) is not None


def test_a_self_closing_root_is_signed_too(rsa_signer, trusted):
    signed = sign_document(b"<Empty/>", rsa_signer)

    assert verify_document(signed, trusted) is not None


def test_entities_are_not_resolved(trusted):
    bomb = b'<!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">]><r>&a;</r>'
    with pytest.raises(errors.SignatureMissing):
        verify_document(bomb, trusted)


def test_malformed_xml_is_a_coded_error(trusted):
    with pytest.raises(errors.SignatureMalformed):
        verify_document(b"<unclosed>", trusted)
