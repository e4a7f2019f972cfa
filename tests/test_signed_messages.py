"""Signatures through a running hub and its drop folders: what the hub sends a signing partner comes out
signed (xmlsec1 and the hub's profile agree), what a partner must sign is checked before it is believed, and a
card that is pulled out or refuses its PIN makes messages wait, never fail, never cost a second PIN try."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from hub.app import Hub
from hub.config import DEFAULT_CONFIG, ConfigError, HubConfig, load_config
from hub.signing import SoftwareKeySigner, load_certificate, sign_document, verify_document
from hub.signing.eport_test_server import EPortTestServer
from hub.signing.software import load_private_key
from hub.signing.virtual_card import CardProfile, VirtualCard
from tests.conftest import REPO, UNDERWRITING, Exchange, hub_environ, needs, wait_for
from tests.signing.conftest import CARDS, ENTERPRISES, FIXTURES, PIN, READER, CardProcess, pcscd_running
from tests.test_hub_process import HubProcess

VALID = UNDERWRITING / "valid"
PENDING = (VALID / "insurer-pending-policy-new.xml").read_text(encoding="utf-8")
APPLICATION = json.loads((VALID / "platform-insurance-application-new.json").read_text(encoding="utf-8"))
PENGCHENG_CERT = FIXTURES / "pengcheng-rsa.cert.pem"
CARD_NUMBER = "01a2b3c4"  # the certificate number of pengcheng's card (rsa-card)
SIGNATURE_CHECK_FAILED = -621029


# ---------------------------------------------------------------- a hub with signing configured


def signing_config(root: Path, extra: str, **environ: str) -> tuple[HubConfig, Path]:
    """The embedded default plus `extra` TOML, written beside the hub's folders (the CLI reads it too)."""
    path = root / "hub.toml"
    path.write_text(DEFAULT_CONFIG.read_text(encoding="utf-8") + "\n" + extra, encoding="utf-8")
    return load_config(path, environ=hub_environ(root, **environ)), path


def message_id(n: int) -> str:
    return f"6F1C2A4E-3B7D-4E21-9A55-{n:012X}"


def pending_policy(n: int) -> bytes:
    """The pending-policy fixture as its own conversation: guid and proposal number n."""
    return (
        PENDING.replace("6F1C2A4E-3B7D-4E21-9A55-0C8E7D1B2A01", message_id(1000 + n))
        .replace("XW2026330100017", f"XW20263301{n:05d}")
        .encode()
    )


def application(n: int) -> bytes:
    """The enterprise's application for pending policy n: a declared message the insurer must get signed."""
    return json.dumps(
        {**APPLICATION, "messageId": message_id(2000 + n), "proposalNo": f"XW20263301{n:05d}"}, ensure_ascii=False
    ).encode()


def open_conversations(exchange: Exchange, count: int) -> None:
    for n in range(count):
        exchange.drop("insurer", f"pending-{n:03d}.xml", pending_policy(n))
    exchange.wait_files("insurer", "archive", count, timeout=30)


def drop_applications(exchange: Exchange, numbers: range) -> None:
    for n in numbers:
        exchange.drop("platform", f"application-{n:03d}.json", application(n))


def signed_out(exchange: Exchange, count: int, timeout: float = 30) -> list[Path]:
    return exchange.wait_files("insurer", "out", count, "InsuranceApplication_*", timeout=timeout)


def xmlsec1_verifies(document: Path, certificate: Path) -> None:
    xmlsec1 = shutil.which("xmlsec1")
    needs(xmlsec1 is not None, "xmlsec1 is not installed; run .ci/setup-pcsc.sh")
    assert xmlsec1 is not None
    done = subprocess.run(
        [xmlsec1, "--verify", "--pubkey-cert-pem", str(certificate), "--enabled-key-data", "x509", str(document)],
        capture_output=True, text=True,
    )
    assert done.returncode == 0 and "OK" in done.stderr, done.stderr


def history(hub: Hub, ident: str, direction: str) -> list[dict[str, Any]]:
    found = hub.status_reader.message(ident)
    assert found is not None, f"no message {ident} in the store"
    return [m for m in found["messages"] if m["direction"] == direction]


# ---------------------------------------------------------------- signing with a key the hub holds

SOFTWARE_SIGNERS = {
    "pkcs12, rsa-sha256": (
        f'pkcs12 = "{FIXTURES / "pengcheng-rsa.p12"}"\npassword_file = "{FIXTURES / "pengcheng-rsa.p12.password"}"\n',
        "rsa-sha256", PENGCHENG_CERT,
    ),
    "pem, rsa-sha1": (
        f'key = "{FIXTURES / "pengcheng-rsa.key.pem"}"\ncertificate = "{PENGCHENG_CERT}"\nalgorithm = "rsa-sha1"\n',
        "rsa-sha1", PENGCHENG_CERT,
    ),
    "pem, sm2-sm3": (
        f'key = "{FIXTURES / "xinghe-sm2.key.pem"}"\ncertificate = "{FIXTURES / "xinghe-sm2.cert.pem"}"\n'
        'algorithm = "sm2-sm3"\n',
        "sm2-sm3", FIXTURES / "xinghe-sm2.cert.pem",
    ),
}


@pytest.mark.parametrize("variant", sorted(SOFTWARE_SIGNERS))
def test_what_the_hub_sends_a_signing_partner_comes_out_signed(
    variant: str, tmp_path: Path, exchange: Exchange, start_hub: Callable[[HubConfig], Hub]
) -> None:
    keys, algorithm, certificate = SOFTWARE_SIGNERS[variant]
    config, _ = signing_config(tmp_path, f'[signers.hub-key]\nkind = "software"\n{keys}\n'
                                          '[partners.insurer.signing]\nsigner = "hub-key"\n')
    hub = start_hub(config)
    open_conversations(exchange, 1)
    drop_applications(exchange, range(1))

    [sent] = signed_out(exchange, 1)

    verified = verify_document(sent.read_bytes(), [load_certificate(certificate)])
    assert verified is not None and verified.algorithm == algorithm
    if algorithm.startswith("rsa"):
        xmlsec1_verifies(sent, certificate)
    root = etree.parse(str(sent)).getroot()
    assert etree.QName(root[-1]).localname == "Signature", "the signature is the root's last child"
    assert root.findtext("{*}Head/{*}appStatus") == "2", "a declared message"
    events = [e["detail"] for e in history(hub, message_id(2000), "out")[0]["history"]]
    assert any(f"signed by hub-key: certificate {verified.certificate_number}, {algorithm}" in e for e in events)
    # Receipts are technical answers: they go out unsigned, so no card ever holds one up.
    receipt = exchange.files("insurer", "out", "Receipt_*")[0].read_bytes()
    assert b"Signature" not in receipt
    assert hub.status_reader.status()["signers"]["hub-key"]["signatures_made"] == 1


def test_a_signer_whose_certificate_expired_parks_the_message_for_an_operator(
    tmp_path: Path, exchange: Exchange, start_hub: Callable[[HubConfig], Hub]
) -> None:
    expired = FIXTURES / "pengcheng-rsa-expired"
    hub = start_hub(signing_config(tmp_path, (
        f'[signers.hub-key]\nkind = "software"\nkey = "{expired}.key.pem"\ncertificate = "{expired}.cert.pem"\n\n'
        '[partners.insurer.signing]\nsigner = "hub-key"\n'
    ))[0])
    open_conversations(exchange, 1)
    drop_applications(exchange, range(1))

    [parked] = wait_for(lambda: hub.status_reader.status()["parked"], what="the application to park")

    assert parked["error"].startswith("SIGNER_CERTIFICATE_EXPIRED: certificate ")
    [stored] = history(hub, parked["message"], "in")
    assert stored["state"] == "parked" and stored["error"]["code"] == "SIGNER_CERTIFICATE_EXPIRED"
    assert hub.status_reader.status()["signers"]["hub-key"]["state"] == "certificate expired"
    assert not exchange.files("insurer", "out", "InsuranceApplication_*"), "nothing goes out unsigned"


def test_signing_is_off_in_the_embedded_default(hub: Hub, exchange: Exchange) -> None:
    assert hub.config.signers == {}
    open_conversations(exchange, 1)
    drop_applications(exchange, range(1))
    [sent] = signed_out(exchange, 1)
    assert b"Signature" not in sent.read_bytes()
    assert hub.status_reader.status()["signers"] == {}


# ---------------------------------------------------------------- what partners sign


def _signer(name: str) -> SoftwareKeySigner:
    key = load_private_key((FIXTURES / f"{name}.key.pem").read_bytes())
    cert = load_certificate(FIXTURES / f"{name}.cert.pem")
    # An expired certificate can still have signed while it was valid: sign as of its validity.
    return SoftwareKeySigner(key, cert, clock=lambda: cert.not_valid_before_utc + dt.timedelta(days=1))


def _signed(name: str, algorithm: str = "rsa-sha256") -> bytes:
    return sign_document(pending_policy(7), _signer(name), algorithm)


INBOUND = {
    "tampered": (lambda: _signed("pengcheng-rsa").replace("启航".encode(), "起航".encode()), "SIGNATURE_INVALID"),
    "unknown certificate": (lambda: _signed("lanjing-rsa"), "CERTIFICATE_UNKNOWN"),
    "expired certificate": (lambda: _signed("pengcheng-rsa-expired"), "CERTIFICATE_EXPIRED"),
    "missing signature": (lambda: pending_policy(7), "SIGNATURE_MISSING"),
}
TRUSTING = (
    "[partners.insurer.signing]\nrequire_signature = true\ntrusted_certificates = ["
    + ", ".join(f'"{FIXTURES / n}.cert.pem"' for n in ("pengcheng-rsa", "pengcheng-rsa-expired", "xinghe-sm2"))
    + "]\n"
)


@pytest.mark.parametrize("case", sorted(INBOUND))
def test_a_signature_that_does_not_check_gets_its_own_rejection(
    case: str, tmp_path: Path, exchange: Exchange, start_hub: Callable[[HubConfig], Hub]
) -> None:
    make, code = INBOUND[case]
    hub = start_hub(signing_config(tmp_path, TRUSTING)[0])
    document = make()
    name = f"insurer-{case.replace(' ', '-')}.xml"
    exchange.drop("insurer", name, document)

    receipt = exchange.receipt_for("insurer", name)

    assert receipt["returnStatus"] == SIGNATURE_CHECK_FAILED
    assert receipt["errors"][0]["code"] == code, receipt
    assert receipt["refMessageId"] == message_id(1007), "the rejection says which message it refuses"
    kept = exchange.wait_files("insurer", "rejected", 1, name)[0]
    assert kept.read_bytes() == document
    assert json.loads(Path(f"{kept}.error.json").read_text())["code"] == code
    [stored] = history(hub, message_id(1007), "in")
    assert stored["state"] == "rejected" and stored["error"]["code"] == code
    with hub.store.read() as conn:
        assert hub.store.get_message(conn, stored["id"]).raw == document, "the store keeps the message as sent"
    assert not exchange.files("platform", "out", "PendingPolicy_*"), "nothing unbelieved goes on"


@pytest.mark.parametrize(("content", "code"), [(b"<ECI101Message", "MALFORMED_XML"), (b"", "MESSAGE_EMPTY")])
def test_what_is_not_a_document_is_refused_as_such_where_signatures_are_required(
    content: bytes, code: str, tmp_path: Path, exchange: Exchange, start_hub: Callable[[HubConfig], Hub]
) -> None:
    start_hub(signing_config(tmp_path, TRUSTING)[0])
    exchange.drop("insurer", "insurer-unreadable.xml", content)
    receipt = exchange.receipt_for("insurer", "insurer-unreadable.xml")
    assert receipt["returnStatus"] == 100 and receipt["errors"][0]["code"] == code, receipt


@pytest.mark.parametrize(("name", "algorithm"), [("pengcheng-rsa", "rsa-sha256"), ("xinghe-sm2", "sm2-sm3")])
def test_a_message_signed_by_a_trusted_certificate_goes_on(
    name: str, algorithm: str, tmp_path: Path, exchange: Exchange, start_hub: Callable[[HubConfig], Hub]
) -> None:
    hub = start_hub(signing_config(tmp_path, TRUSTING)[0])
    exchange.drop("insurer", "insurer-signed.xml", _signed(name, algorithm))

    assert exchange.receipt_for("insurer", message_id(1007))["returnStatus"] == 120
    exchange.wait_files("platform", "out", 1, "PendingPolicy_*")
    events = [e["event"] + " " + e["detail"] for e in history(hub, message_id(1007), "in")[0]["history"]]
    assert any(e.startswith("signature-verified certificate") and algorithm in e for e in events), events


def test_xmlsec1s_signature_is_believed(
    tmp_path: Path, exchange: Exchange, start_hub: Callable[[HubConfig], Hub]
) -> None:
    xmlsec1 = shutil.which("xmlsec1")
    needs(xmlsec1 is not None, "xmlsec1 is not installed; run .ci/setup-pcsc.sh")
    assert xmlsec1 is not None
    dsig = "http://www.w3.org/2000/09/xmldsig#"
    template = tmp_path / "template.xml"
    template.write_bytes(pending_policy(7).replace(b"</ECI101Message>", (
        f'<ds:Signature xmlns:ds="{dsig}"><ds:SignedInfo>'
        '<ds:CanonicalizationMethod Algorithm="http://www.w3.org/TR/2001/REC-xml-c14n-20010315"/>'
        '<ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/>'
        f'<ds:Reference URI=""><ds:Transforms><ds:Transform Algorithm="{dsig}enveloped-signature"/>'
        '</ds:Transforms><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue/>'
        "</ds:Reference></ds:SignedInfo><ds:SignatureValue/><ds:KeyInfo><ds:KeyName>01a2b3c4</ds:KeyName>"
        "<ds:X509Data><ds:X509Certificate/></ds:X509Data></ds:KeyInfo></ds:Signature></ECI101Message>"
    ).encode()))
    key = f"{FIXTURES / 'pengcheng-rsa.key.pem'},{PENGCHENG_CERT}"
    signed = subprocess.run([xmlsec1, "--sign", "--privkey-pem", key, str(template)], capture_output=True, check=True)
    start_hub(signing_config(tmp_path, TRUSTING)[0])

    exchange.drop("insurer", "insurer-xmlsec1.xml", signed.stdout)

    assert exchange.receipt_for("insurer", message_id(1007))["returnStatus"] == 120


# ---------------------------------------------------------------- the card, through pcscd


@pytest.fixture
def card(tmp_path: Path) -> Iterator[CardProcess]:
    """pengcheng's card in the virtual reader, reached through pcscd; pulled out after the test."""
    needs(shutil.which("pcscd") is not None and pcscd_running(),
          f"pcscd, pyscard and the vpcd reader {READER!r} are needed; run .ci/setup-pcsc.sh")
    inserted = CardProcess(CARDS / "rsa-card.json", tmp_path / "rsa-card-state.json").start()
    yield inserted
    inserted.stop()


def card_config(tmp_path: Path, pin_source: str) -> tuple[HubConfig, Path]:
    return signing_config(tmp_path, (
        f'[signers.card]\nkind = "card"\nreader = "{READER}"\n{pin_source}\n'
        f'state_dir = "{tmp_path / "signing"}"\ntimeout_seconds = 1\n\n'
        '[partners.insurer.signing]\nsigner = "card"\n'
    ), HUB_RETRY__WAIT_SECONDS="0.2")


def card_status(hub: Hub) -> dict[str, Any]:
    return dict(hub.status_reader.status()["signers"]["card"])


def run_cli(config_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "run_hub.py"), "--config", str(config_path), *args],
                          capture_output=True, text=True, timeout=60, cwd=config_path.parent)


def test_a_batch_signed_by_the_card_survives_the_card_being_pulled_out(
    card: CardProcess, tmp_path: Path, exchange: Exchange,
    start_hub: Callable[[HubConfig], Hub], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HUB_TEST_CARD_PIN", PIN)
    hub = start_hub(card_config(tmp_path, 'pin_env = "HUB_TEST_CARD_PIN"')[0])
    open_conversations(exchange, 30)

    drop_applications(exchange, range(10))
    signed_out(exchange, 10)
    card.stop()  # pulled out mid-batch
    drop_applications(exchange, range(10, 30))
    absent = wait_for(lambda: (s := card_status(hub))["state"] == "card absent" and s, what="status: card absent")
    waiting = wait_for(lambda: len(hub.status_reader.status()["awaiting_signature"]) == 20 and
                       hub.status_reader.status()["awaiting_signature"], what="20 messages awaiting the card")
    time.sleep(2.0)  # several waits: longer than the whole retry policy ([0.2, 0.5] s) would allow
    status = hub.status_reader.status()
    assert absent["card_present"] is False
    assert {w["error"]["code"] for w in waiting} <= {"CARD_ABSENT", "DEADLINE_EXCEEDED"}
    assert len(status["awaiting_signature"]) == 20 and status["queue"]["parked"] == 0
    assert len(exchange.files("insurer", "out", "InsuranceApplication_*")) == 10
    card.start()  # put back

    sent = signed_out(exchange, 30)

    cert = load_certificate(PENGCHENG_CERT)
    for document in sent:
        verified = verify_document(document.read_bytes(), [cert])
        assert verified is not None and verified.certificate_number == CARD_NUMBER
    xmlsec1_verifies(sent[-1], PENGCHENG_CERT)
    assert sorted(p.name for p in sent) == sorted(f"InsuranceApplication_{message_id(2000 + n)}.xml" for n in range(30))
    exchange.wait_files("platform", "archive", 30)
    status = hub.status_reader.status()
    assert status["queue"]["parked"] == 0 and status["awaiting_signature"] == []
    assert status["messages"]["by_state"]["in"] == {"accepted": 60}
    ready = card_status(hub)
    assert (ready["state"], ready["card_present"], ready["blocked"]) == ("ready", True, False)
    assert ready["signatures_made"] == 30
    pengcheng = ENTERPRISES["pengcheng"]
    assert (ready["enterprise_name"], ready["organisation_code"]) == (pengcheng["name"], pengcheng["organisation_code"])
    assert ready["certificate_number"] == CARD_NUMBER and ready["not_after"]
    assert pengcheng["holder_id"] not in json.dumps(status, ensure_ascii=False)
    assert card.tries_left == 3


@pytest.mark.slow
@pytest.mark.parametrize("pin", [PIN, "12345678"], ids=["right PIN", "wrong PIN"])
def test_a_hubs_worker_processes_sign_with_one_card_and_a_wrong_pin_costs_one_try_between_them(
    pin: str, card: CardProcess, tmp_path: Path, exchange: Exchange,
) -> None:
    """`run` as `make run` runs it: its two worker processes each open the card through pcscd. With the right PIN
    both sign; with a wrong one the card is refused the PIN once, whichever process presents it."""
    _config, config_path = card_config(tmp_path, 'pin_env = "HUB_TEST_CARD_PIN"')
    # Batches of 8: the 40 applications are several claims, so both worker processes take some.
    process = HubProcess(tmp_path, HUB_TEST_CARD_PIN=pin, HUB_RETRY__WAIT_SECONDS="0.2", HUB_QUEUE__BATCH="8")
    process.args = ["--config", str(config_path), "run"]
    process.start()
    try:
        open_conversations(exchange, 40)
        drop_applications(exchange, range(40))
        if pin == PIN:
            sent = signed_out(exchange, 40)
        else:
            wait_for(lambda: len(process.get("/status")[1]["awaiting_signature"]) == 40, 30, "40 waiting")
            time.sleep(1.5)  # several waits pass in both processes: none may present the PIN again
    finally:
        process.stop()
    log = process.log.read_text()
    if pin == PIN:
        signed_by = set(re.findall(r"\[worker process (\d+)\] hub.pipeline: accepted InsuranceApplication", log))
        assert len(signed_by) == 2, "each worker process signed some"
        cert = load_certificate(PENGCHENG_CERT)
        assert all(verify_document(p.read_bytes(), [cert]).certificate_number == CARD_NUMBER  # type: ignore[union-attr]
                   for p in sent)
        assert card.tries_left == 3
    else:
        assert card.tries_left == 2, "exactly one try spent"
        assert not exchange.files("insurer", "out", "InsuranceApplication_*")
        waits = [line for line in log.splitlines() if "waits for its signature: PIN_" in line]
        tried = set(re.findall(r"\[worker process (\d+)\]", "\n".join(waits)))
        assert len(tried) == 2, "both worker processes tried to sign"
        assert all("[worker process" in line for line in waits), "the hub's own process runs no worker"


def test_a_wrong_pin_costs_one_try_then_messages_wait_until_an_operator_unblocks_the_card(
    card: CardProcess, tmp_path: Path, exchange: Exchange,
    start_hub: Callable[[HubConfig], Hub], caplog: pytest.LogCaptureFixture,
) -> None:
    pin_file = tmp_path / "card.pin"
    pin_file.write_text("12345678\n")
    config, config_path = card_config(tmp_path, f'pin_file = "{pin_file}"')
    hub = start_hub(config)
    open_conversations(exchange, 5)

    drop_applications(exchange, range(5))

    blocked = wait_for(lambda: (s := card_status(hub))["state"] == "pin blocked" and s, what="status: pin blocked")
    wait_for(lambda: len(hub.status_reader.status()["awaiting_signature"]) == 5, what="5 messages waiting")
    time.sleep(1.5)  # several waits pass: none of them may present the PIN again
    assert card.tries_left == 2, "exactly one try spent"
    assert blocked["blocked"] is True and blocked["tries_left"] == 2
    status = hub.status_reader.status()
    codes = {w["error"]["code"] for w in status["awaiting_signature"]}
    assert codes <= {"PIN_REJECTED", "PIN_BLOCKED"} and "PIN_BLOCKED" in codes, codes
    assert status["queue"]["parked"] == 0
    assert not exchange.files("insurer", "out", "InsuranceApplication_*")

    shown = run_cli(config_path, "card", "status")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["card"]["state"] == "pin blocked"
    assert card.tries_left == 2, "card status spends no try"

    pin_file.write_text(PIN + "\n")  # the operator puts the right PIN in place, then lifts the block
    lifted = run_cli(config_path, "card", "unblock", CARD_NUMBER.upper())
    assert lifted.returncode == 0, lifted.stderr
    assert "PIN block lifted" in lifted.stdout

    sent = signed_out(exchange, 5)
    cert = load_certificate(PENGCHENG_CERT)
    assert all(verify_document(p.read_bytes(), [cert]) for p in sent)
    assert card.tries_left == 3
    assert card_status(hub)["state"] == "ready"
    assert run_cli(config_path, "card", "unblock", CARD_NUMBER).returncode == 1, "nothing left to lift"
    for pin in ("12345678", PIN):
        assert pin not in caplog.text


# ---------------------------------------------------------------- the card behind the E-Port client


@pytest.fixture
def eport_client(tmp_path: Path) -> Iterator[EPortTestServer]:
    """The E-Port client's JSON-RPC (its test stand-in) in front of pengcheng's RSA card."""
    server = EPortTestServer(VirtualCard(CardProfile.load(CARDS / "rsa-card.json"), tmp_path / "card.json")).start()
    yield server
    server.stop()


def test_the_e_port_client_signs_and_a_card_out_of_it_makes_messages_wait(
    eport_client: EPortTestServer, tmp_path: Path, exchange: Exchange, start_hub: Callable[[HubConfig], Hub]
) -> None:
    pin_file = tmp_path / "card.pin"
    pin_file.write_text(PIN)
    config, _ = signing_config(tmp_path, (
        f'[signers.client]\nkind = "eport-client"\nurl = "{eport_client.url}"\npin_file = "{pin_file}"\n'
        f'state_dir = "{tmp_path / "signing"}"\ntimeout_seconds = 1\n\n[partners.insurer.signing]\nsigner = "client"\n'
    ), HUB_RETRY__WAIT_SECONDS="0.2")
    hub = start_hub(config)
    open_conversations(exchange, 2)

    eport_client.card_inserted = False
    drop_applications(exchange, range(2))
    wait_for(lambda: len(hub.status_reader.status()["awaiting_signature"]) == 2, what="2 messages waiting")
    assert hub.status_reader.status()["signers"]["client"]["state"] == "card absent"
    eport_client.card_inserted = True

    sent = signed_out(exchange, 2)
    for document in sent:
        xmlsec1_verifies(document, PENGCHENG_CERT)
    status = hub.status_reader.status()
    assert status["signers"]["client"]["state"] == "ready" and status["queue"]["parked"] == 0
    assert eport_client.card.tries_left == 3


# ---------------------------------------------------------------- bad signing config


@pytest.mark.parametrize(("extra", "says"), [
    ('[partners.insurer.signing]\nsigner = "nobody"\n', "partners.insurer.signing.signer names 'nobody'"),
    ('[partners.platform.signing]\nsigner = "k"\n', "partners.platform: Value error, signing: only xml partners"),
    ('[signers.k]\nkind = "card"\n', "signers.k: Value error, give pin_env"),
    ('[signers.k]\nkind = "card"\npin_env = "A"\npin_file = "b"\n', "signers.k: Value error, give pin_env or"),
    ('[signers.k]\nkind = "card"\npin = "88888888"\n', "signers.k.pin: Extra inputs are not permitted"),
    ('[signers.k]\nkind = "eport-client"\npin_env = "A"\nalgorithm = "rsa-sha256"\n', "signers.k.algorithm"),
    ('[signers.k]\nkind = "card"\npin_env = "A"\ntimeout_seconds = 60\n', "signers.k.timeout_seconds must be under"),
    ('[partners.insurer.signing]\nrequire_signature = true\n', "partners.insurer.signing: Value error, require_"),
])
def test_bad_signing_config_names_the_key(extra: str, says: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=says.replace(".", r"\.").replace("(", r"\(")):
        signing_config(tmp_path, extra)


@pytest.mark.parametrize(("extra", "says"), [
    ('[signers.k]\nkind = "software"\nkey = "missing.pem"\ncertificate = "missing.pem"\n',
     "signers.k.key: missing.pem is not a file"),
    ('[signers.k]\nkind = "card"\npin_env = "HUB_TEST_UNSET_PIN"\ntimeout_seconds = 1\n',
     "signers.k.pin_env: environment variable HUB_TEST_UNSET_PIN is not set"),
    (f'[signers.k]\nkind = "software"\npkcs12 = "{FIXTURES / "pengcheng-rsa.p12"}"\npassword_env = "HUB_TEST_UNSET"\n',
     "signers.k.password_env: environment variable HUB_TEST_UNSET is not set"),
    (f'[partners.insurer.signing]\ntrusted_certificates = ["{FIXTURES / "enterprises.json"}"]\n',
     "partners.insurer.signing.trusted_certificates[0]"),
])
def test_an_unusable_key_or_secret_stops_the_start_with_one_line(extra: str, says: str, tmp_path: Path) -> None:
    _config, path = signing_config(tmp_path, extra)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_TEST_UNSET")}
    done = subprocess.run([sys.executable, str(REPO / "run_hub.py"), "--config", str(path)], cwd=tmp_path,
                          env={**env, **hub_environ(tmp_path)}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and says in done.stderr, done.stderr
