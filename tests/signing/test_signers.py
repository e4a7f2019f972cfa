"""Software keys, secrets and the per-card worker."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from hub.signing import errors
from hub.signing.algorithms import algorithm
from hub.signing.base import SignerStatus
from hub.signing.profile import sign_document, verify_document
from hub.signing.secret import Secret
from hub.signing.software import SoftwareKeySigner
from hub.signing.worker import SigningWorker

from .conftest import ENTERPRISES, FIXTURES, declared_message

RSA256 = algorithm("rsa-sha256")


def test_pkcs12_key_opens_with_the_password_from_a_file_or_the_environment(monkeypatch, trusted):
    by_file = SoftwareKeySigner.from_pkcs12(
        FIXTURES / "pengcheng-rsa.p12", Secret.from_file(FIXTURES / "pengcheng-rsa.p12.password")
    )
    monkeypatch.setenv("HUB_TEST_P12", "fixture-pkcs12-password")
    by_env = SoftwareKeySigner.from_pkcs12(FIXTURES / "pengcheng-rsa.p12", Secret.from_env("HUB_TEST_P12"))

    for signer in (by_file, by_env):
        assert verify_document(sign_document(declared_message(), signer), trusted) is not None


def test_a_wrong_or_missing_password_is_a_coded_error(monkeypatch):
    monkeypatch.setenv("HUB_TEST_P12", "not-the-password")
    with pytest.raises(errors.KeyUnreadable):
        SoftwareKeySigner.from_pkcs12(FIXTURES / "pengcheng-rsa.p12", Secret.from_env("HUB_TEST_P12"))
    monkeypatch.delenv("HUB_TEST_P12")
    with pytest.raises(errors.PinMissing):
        SoftwareKeySigner.from_pkcs12(FIXTURES / "pengcheng-rsa.p12", Secret.from_env("HUB_TEST_P12"))


def test_a_secret_never_shows_its_value(monkeypatch):
    monkeypatch.setenv("HUB_TEST_PIN", "88888888")
    secret = Secret.from_env("HUB_TEST_PIN")

    assert "88888888" not in repr(secret) and "88888888" not in str(secret)
    assert secret.reveal() == "88888888"


def test_status_warns_thirty_days_before_expiry_and_stops_after(rsa_signer):
    expiry = rsa_signer.certificate().not_valid_after_utc
    cert, key = rsa_signer.certificate(), rsa_signer._key

    soon = SoftwareKeySigner(key, cert, clock=lambda: expiry - dt.timedelta(days=29)).status()
    early = SoftwareKeySigner(key, cert, clock=lambda: expiry - dt.timedelta(days=31)).status()
    late = SoftwareKeySigner(key, cert, clock=lambda: expiry + dt.timedelta(days=1))

    assert soon.state == "ready" and soon.warnings == ["certificate 01a2b3c4 expires 2045-01-01"]
    assert early.warnings == []
    assert late.status().state == "certificate expired"
    with pytest.raises(errors.SignerCertificateExpired):
        late.sign(b"x", RSA256)


def test_status_shows_the_enterprise_and_never_the_holder_id(sm2_signer):
    status = sm2_signer.status().as_dict()
    xinghe = ENTERPRISES["xinghe"]

    assert status["enterprise_name"] == xinghe["name"]
    assert status["organisation_code"] == xinghe["organisation_code"]
    assert status["card_number"] == xinghe["card_number"]
    assert xinghe["holder_id"] not in repr(status)


class FlakyCard:
    """A signer whose card is out for the first `absent_for` seconds, or that fails for good."""

    def __init__(
        self, inner: SoftwareKeySigner, absent_for: float = 0.0, error: Exception | None = None
    ) -> None:
        self.inner = inner
        self.back_at = time.monotonic() + absent_for
        self.error = error
        self.calls = 0
        self.lock = threading.Lock()

    def certificate(self) -> x509.Certificate:
        return self.inner.certificate()

    def sign(self, data: bytes, method) -> bytes:
        with self.lock:
            self.calls += 1
        if self.error is not None:
            raise self.error
        if time.monotonic() < self.back_at:
            raise errors.CardAbsent("no card")
        return self.inner.sign(data, method)

    def status(self) -> SignerStatus:
        return self.inner.status()


def test_requests_wait_for_an_absent_card_and_are_served_in_order(rsa_signer, trusted):
    worker = SigningWorker(FlakyCard(rsa_signer, absent_for=0.5), timeout=10, retry_interval=0.05)
    try:
        futures = [worker.submit(f"message {i}".encode(), RSA256) for i in range(5)]
        time.sleep(0.2)
        waiting = worker.status()
        values = [f.result(timeout=5) for f in futures]
    finally:
        worker.close()

    assert waiting.state == "card absent" and waiting.queue_depth == 4
    public_key = rsa_signer.certificate().public_key()
    for i, value in enumerate(values):
        public_key.verify(value, f"message {i}".encode(), padding.PKCS1v15(), hashes.SHA256())


def test_a_request_past_its_deadline_fails_as_transient(rsa_signer):
    worker = SigningWorker(FlakyCard(rsa_signer, absent_for=60), timeout=0.3, retry_interval=0.05)
    try:
        with pytest.raises(errors.DeadlineExceeded) as caught:
            worker.sign(b"x", RSA256)
    finally:
        worker.close()
    assert caught.value.transient


def test_a_permanent_error_fails_at_once(rsa_signer):
    card = FlakyCard(rsa_signer, error=errors.PinBlocked("blocked"))
    worker = SigningWorker(card, timeout=10)
    try:
        with pytest.raises(errors.PinBlocked):
            worker.sign(b"x", RSA256)
    finally:
        worker.close()
    assert card.calls == 1


def test_the_queue_is_bounded(rsa_signer):
    worker = SigningWorker(FlakyCard(rsa_signer, absent_for=60), max_queue=2, timeout=60, retry_interval=0.05)
    try:
        worker.submit(b"1", RSA256)
        time.sleep(0.1)  # the worker holds the first; two more fill the queue
        pending = [worker.submit(b"2", RSA256), worker.submit(b"3", RSA256)]
        with pytest.raises(errors.QueueFull) as caught:
            worker.submit(b"4", RSA256)
    finally:
        worker.close()
    assert caught.value.transient
    assert all(isinstance(p.exception(timeout=5), errors.SignerClosed) for p in pending)
