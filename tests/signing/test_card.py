"""The card through pcscd + vpcd + pyscard and the virtual card, as an enterprise's card would be used."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from hub.signing import errors, pin_guard
from hub.signing.card import CardSigner
from hub.signing.profile import sign_document, verify_document
from hub.signing.secret import Secret
from hub.signing.worker import SigningWorker

from .conftest import ENTERPRISES, PIN, READER, declared_message, wait_until


@pytest.fixture
def card_signer(tmp_path, monkeypatch):
    """A CardSigner on the first vpcd reader with the PIN from the environment; closed after the test."""
    made: list[CardSigner] = []

    def make(pin: str = PIN) -> CardSigner:
        monkeypatch.setenv("HUB_TEST_CARD_PIN", pin)
        signer = CardSigner(Secret.from_env("HUB_TEST_CARD_PIN"), tmp_path / "state", reader=READER)
        made.append(signer)
        return signer

    yield make
    for signer in made:
        signer.close()


@pytest.mark.parametrize(
    ("profile", "method"), [("rsa-card", "rsa-sha256"), ("rsa-card", "rsa-sha1"), ("sm2-card", "sm2-sm3")]
)
def test_a_batch_of_declared_messages_is_signed_by_the_card(
    profile, method, start_card, card_signer, trusted
):
    card = start_card(profile)
    signer = card_signer()

    signed = [sign_document(declared_message(seq), signer, method) for seq in range(20)]

    for document in signed:
        verified = verify_document(document, trusted)
        assert verified is not None and verified.algorithm == method
    assert signer.status().signatures_made == 20
    assert card.tries_left == 3


def test_the_first_wrong_pin_blocks_the_card_and_spends_exactly_one_try(start_card, card_signer, tmp_path):
    card = start_card("rsa-card")
    signer = card_signer(pin="12345678")

    with pytest.raises(errors.PinRejected) as first:
        sign_document(declared_message(), signer)
    with pytest.raises(errors.PinBlocked) as second:
        sign_document(declared_message(), signer)
    signer.close()
    restarted = card_signer(pin="12345678")  # a hub restart keeps the block
    with pytest.raises(errors.PinBlocked):
        sign_document(declared_message(), restarted)

    assert first.value.code == "PIN_REJECTED" and not first.value.transient
    assert second.value.code == "PIN_BLOCKED" and not second.value.transient
    assert card.tries_left == 2
    status = restarted.status()
    assert (status.state, status.blocked, status.tries_left) == ("pin blocked", True, 2)


def test_signers_of_several_processes_with_a_wrong_pin_spend_one_try_between_them(start_card, card_signer):
    """A hub and its worker processes each open the card: they present the PIN one at a time, and the first
    refusal's block stops the others. Four signers (as four processes would: each its own connection and lock
    file handle) sign at the same moment."""
    card = start_card("rsa-card")
    signers = [card_signer(pin="12345678") for _ in range(4)]
    for signer in signers:
        signer.certificate()  # each connected, so they reach the PIN together

    def attempt(signer: CardSigner) -> str:
        try:
            sign_document(declared_message(), signer)
        except (errors.PinRejected, errors.PinBlocked) as exc:
            return exc.code
        return "signed"

    with ThreadPoolExecutor(len(signers)) as pool:
        outcomes = sorted(pool.map(attempt, signers))

    assert outcomes == ["PIN_BLOCKED"] * 3 + ["PIN_REJECTED"]
    assert card.tries_left == 2


def test_an_operator_unblock_lets_the_right_pin_through(start_card, card_signer, tmp_path, trusted):
    card = start_card("rsa-card")
    with pytest.raises(errors.PinRejected):
        sign_document(declared_message(), card_signer(pin="00000000"))

    assert pin_guard.unblock(tmp_path / "state", "01a2b3c4") is True
    signed = sign_document(declared_message(), card_signer(pin=PIN))

    assert verify_document(signed, trusted) is not None
    assert card.tries_left == 3  # a right PIN resets the card's counter
    assert pin_guard.unblock(tmp_path / "state", "01a2b3c4") is False


def test_no_pin_is_presented_when_one_try_is_left(start_card, card_signer):
    card = start_card("rsa-card", tries_left=1)
    signer = card_signer(pin=PIN)

    with pytest.raises(errors.PinLastTry):
        sign_document(declared_message(), signer)

    assert card.tries_left == 1
    assert signer.status().state == "pin last try"


def test_status_reads_the_card_without_spending_a_try_and_never_shows_the_holder_id(start_card, card_signer):
    card = start_card("rsa-card", tries_left=2)
    signer = card_signer()

    status = signer.status()

    assert card.tries_left == 2
    pengcheng = ENTERPRISES["pengcheng"]
    assert status.kind == "pcsc" and status.reader == READER and status.card_present is True
    assert status.state == "ready" and status.tries_left == 2 and not status.blocked
    assert status.certificate_number == "01a2b3c4"
    assert status.enterprise_name == pengcheng["name"]
    assert status.organisation_code == pengcheng["organisation_code"]
    assert status.card_number == pengcheng["card_number"]
    assert pengcheng["holder_id"] not in repr(status.as_dict())


def test_the_pin_never_reaches_the_logs(start_card, card_signer, caplog, tmp_path):
    start_card("rsa-card")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(errors.PinRejected) as caught:
        sign_document(declared_message(), card_signer(pin="13572468"))
    pin_guard.unblock(tmp_path / "state", "01a2b3c4")
    sign_document(declared_message(), card_signer(pin=PIN))

    assert "card 01a2b3c4 rejected the PIN" in caplog.text
    assert "card 01a2b3c4: PIN accepted" in caplog.text
    for secret in (PIN, "13572468"):
        assert secret not in caplog.text
        assert secret not in str(caught.value)


def test_an_expired_card_stops_signing_with_a_clear_status(start_card, card_signer):
    start_card("expired-card")
    signer = card_signer()

    with pytest.raises(errors.SignerCertificateExpired) as caught:
        sign_document(declared_message(), signer)

    assert caught.value.code == "CERTIFICATE_EXPIRED" and not caught.value.transient
    assert signer.status().state == "certificate expired"


def test_a_card_pulled_out_mid_batch_makes_messages_wait_not_fail(start_card, card_signer, trusted):
    card = start_card("rsa-card")
    worker = SigningWorker(card_signer(), timeout=60, retry_interval=0.1)
    seen: list[tuple[str, int]] = []

    # The card is pulled after the batch's first 10 signatures and the other 50 come while it is out. (Pulling
    # it from another thread once 10 were made raced the emulated card, which signs the rest within a few ms.)
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            signed = [future.result(timeout=60) for future in
                      [pool.submit(sign_document, declared_message(seq), worker) for seq in range(10)]]
            card.stop()
            wait_until(lambda: worker.status().state == "card absent")
            rest = [pool.submit(sign_document, declared_message(seq), worker) for seq in range(10, 60)]
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:  # the batch waits while the card is out
                status = worker.status()
                seen.append((status.state, status.queue_depth))
                time.sleep(0.1)
            card.start()
            signed += [future.result(timeout=60) for future in rest]
    finally:
        worker.close()

    assert len(signed) == 60
    for document in signed:
        assert verify_document(document, trusted) is not None
    assert seen and all(state == "card absent" for state, _depth in seen)
    assert max(depth for _state, depth in seen) > 0
    assert worker.status().signatures_made == 60
