"""Signing: signatures per second through each signer, and sign+verify of a 5 KB message"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from bench import Result, Unavailable, rate
from hub.signing.algorithms import algorithm
from hub.signing.certificates import load_certificate
from hub.signing.eport_client import EPortClientSigner
from hub.signing.eport_test_server import EPortTestServer
from hub.signing.profile import sign_document, verify_document
from hub.signing.secret import Secret
from hub.signing.software import SoftwareKeySigner
from hub.signing.virtual_card import CardProfile, CardSlot, VirtualCard

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "signing"
CARDS = FIXTURES / "cards"
PIN_ENV = "HUB_BENCH_CARD_PIN"
SIGNED_INFO = b"<ds:SignedInfo>" + b"x" * 900 + b"</ds:SignedInfo>"  # the size a signer really gets


def message_5kb() -> bytes:
    lines = "".join(
        f"\n    <eci:ShipmentLine seq='{i}'><eci:InvoiceNo>INV-2024-{i:04d}</eci:InvoiceNo>"
        f"<eci:HsCode>8517130000</eci:HsCode><eci:AmountUsd>{1000 + i}.50</eci:AmountUsd></eci:ShipmentLine>"
        for i in range(30)
    )
    root = '<eci:ECI101Message xmlns:eci="urn:sw-eci-hub:insurer:1">'
    return f"{root}<eci:Body>{lines}\n</eci:Body></eci:ECI101Message>".encode()


def software() -> tuple[SoftwareKeySigner, SoftwareKeySigner]:
    rsa = SoftwareKeySigner.from_pem(FIXTURES / "pengcheng-rsa.key.pem", FIXTURES / "pengcheng-rsa.cert.pem")
    sm2 = SoftwareKeySigner.from_pem(FIXTURES / "xinghe-sm2.key.pem", FIXTURES / "xinghe-sm2.cert.pem")
    return rsa, sm2


def software_results() -> list[Result]:
    rsa, sm2 = software()
    trusted = [rsa.certificate(), sm2.certificate()]
    message = message_5kb()
    out = [
        Result(
            "software RSA-2048 sign (rsa-sha256)",
            rate(lambda: rsa.sign(SIGNED_INFO, algorithm("rsa-sha256"))),
            "signatures/s",
        ),
        Result(
            "software SM2 sign (sm2-sm3, gmssl)",
            rate(lambda: sm2.sign(SIGNED_INFO, algorithm("sm2-sm3"))),
            "signatures/s",
        ),
    ]
    for name, signer in (("rsa-sha256", rsa), ("sm2-sm3", sm2)):
        signed = sign_document(message, signer, name)
        out.append(
            Result(f"sign+verify {len(message) / 1024:.1f} KB message, {name}",
                   rate(lambda s=signer, n=name: verify_document(sign_document(message, s, n), trusted)),
                   "messages/s")
        )  # fmt: skip
        out.append(
            Result(
                f"verify {len(message) / 1024:.1f} KB message, {name}",
                rate(lambda s=signed: verify_document(s, trusted)),
                "messages/s",
            )
        )
    return out


def card_results() -> list[Result]:
    try:
        from smartcard.System import readers

        from hub.signing.card import CardSigner
    except ImportError:
        raise Unavailable("pyscard is not installed (pip install -e '.[card]')") from None
    if not Path("/run/pcscd/pcscd.comm").exists():
        raise Unavailable("pcscd is not running (.ci/setup-pcsc.sh)")
    out = []
    os.environ[PIN_ENV] = "88888888"
    with tempfile.TemporaryDirectory() as tmp:
        for profile, method in (("rsa-card", "rsa-sha256"), ("sm2-card", "sm2-sm3")):
            card = VirtualCard(CardProfile.load(CARDS / f"{profile}.json"), Path(tmp) / f"{profile}.json")
            slot = CardSlot(card).insert()
            signer = CardSigner(Secret.from_env(PIN_ENV), tmp, reader=str(readers()[0]))
            try:
                deadline = time.monotonic() + 10
                while True:
                    try:
                        signer.certificate()
                        break
                    except Exception:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.1)
                out.append(
                    Result(f"virtual card via pcscd+vpcd+pyscard, {method}",
                           rate(lambda s=signer, m=method: s.sign(SIGNED_INFO, algorithm(m))), "signatures/s",
                           "emulated card; a real E-Port key plans ~4/s")
                )  # fmt: skip
            finally:
                signer.close()
                slot.remove()
                time.sleep(0.5)  # let pcscd see the card go before the next one dials in
    return out


def eport_client_results() -> list[Result]:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        pin = Path(tmp) / "pin"
        pin.write_text("88888888")
        for profile, method in (("rsa-card", "rsa-sha1"), ("sm2-card", "sm2-sm3")):
            card = VirtualCard(CardProfile.load(CARDS / f"{profile}.json"), Path(tmp) / f"{profile}.json")
            server = EPortTestServer(card).start()
            signer = EPortClientSigner(Secret.from_file(pin), tmp, url=server.url)
            try:
                out.append(
                    Result(f"E-Port client test server over WebSocket, {method}",
                           rate(lambda s=signer, m=method: s.sign(SIGNED_INFO, algorithm(m))), "signatures/s",
                           "JSON-RPC round trip + virtual card")
                )  # fmt: skip
            finally:
                signer.close()
                server.stop()
    return out


def run() -> list[Result]:
    load_certificate(FIXTURES / "pengcheng-rsa.cert.pem")
    results = software_results() + eport_client_results()
    try:
        results += card_results()
    except Unavailable as exc:
        results.append(Result(f"virtual card via PC/SC: not measured ({exc})", 0, "-"))
    return results
