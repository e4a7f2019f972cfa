"""The E-Port card through PC/SC (pyscard): select, read the certificate, verify the PIN, sign.

The host hashes; the card signs what it is given (see apdu.py). A PIN is presented at most once per session,
never when the card has one try left, and never again for a card once it rejected one (pin_guard). Any PC/SC
failure (card pulled, reader gone, pcscd restarted) drops the session and raises the transient CardAbsent.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509

from . import apdu, pin_guard, sm2
from .algorithms import SignatureAlgorithm
from .base import SignerStatus, check_certificate, check_key_type
from .certificates import CertificateInfo, certificate_number, load_certificate, sm2_public_key, utcnow
from .errors import CardAbsent, CardError, CardLocked, PinLastTry, PinMissing, PinRejected, SignerError
from .secret import Secret

log = logging.getLogger(__name__)


def _pcsc_errors() -> tuple[type[Exception], ...]:
    from smartcard.Exceptions import SmartcardException
    from smartcard.pcsc.PCSCExceptions import BaseSCardException

    return (SmartcardException, BaseSCardException)


def reader_names() -> list[str]:
    from smartcard.System import readers

    return [str(r) for r in readers()]


class CardSigner:
    kind = "pcsc"

    def __init__(
        self,
        pin: Secret,
        state_dir: str | Path,
        *,
        reader: str | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        """`reader`: a PC/SC reader name or its prefix; None takes the first reader holding our card."""
        self._pin = pin
        self._state_dir = Path(state_dir)
        self._reader = reader
        self._clock = clock
        self._lock = threading.RLock()
        self._errors = _pcsc_errors()
        self._open_errors: tuple[type[Exception], ...] = (*self._errors, CardError)
        self._absent_errors: tuple[type[Exception], ...] = (*self._errors, CardAbsent)
        self._connection: Any = None
        self._reader_name: str | None = None
        self._certificate: x509.Certificate | None = None
        self._info: CertificateInfo | None = None
        self._verified = False
        self._signatures = 0

    # ------------------------------------------------------------ session

    def _transmit(self, command: bytes) -> tuple[bytes, int]:
        data, sw1, sw2 = self._connection.transmit(list(command))
        return bytes(data), (sw1 << 8) | sw2

    def _open(self) -> None:
        if self._connection is not None:
            return
        from smartcard.System import readers

        candidates = [r for r in readers() if self._reader is None or str(r).startswith(self._reader)]
        if not candidates:
            raise CardAbsent(f"no PC/SC reader matches {self._reader!r}")
        last_error = "no card in any reader"
        for reader in candidates:
            connection = reader.createConnection()
            try:
                connection.connect()
                self._connection = connection
                _data, sw = self._transmit(apdu.select())
                if sw != apdu.SW_OK:
                    raise CardError(f"{reader}: the card does not know our application ({sw:04X})")
                cert = load_certificate(self._read_certificate())
            except self._open_errors as exc:
                last_error = f"{reader}: {exc}"
                self._close_connection()
                continue
            if self._certificate is not None and certificate_number(cert) != self._info_number():
                self._close_connection()
                raise CardAbsent(
                    f"{reader} holds card {certificate_number(cert)}, not {self._info_number()}: "
                    "waiting for the right card"
                )
            self._reader_name = str(reader)
            self._certificate = cert
            self._info = CertificateInfo.of(cert)
            self._verified = False
            log.info("card %s present in %s", self._info.number, reader)
            return
        raise CardAbsent(last_error)

    def _info_number(self) -> str:
        assert self._info is not None
        return self._info.number

    def _read_certificate(self) -> bytes:
        out = b""
        while True:
            chunk, sw = self._transmit(apdu.read_binary(len(out)))
            if sw != apdu.SW_OK:
                raise CardError(f"reading the certificate failed ({sw:04X})")
            out += chunk
            if len(chunk) < apdu.READ_CHUNK:
                return out

    def _close_connection(self) -> None:
        connection, self._connection = self._connection, None
        self._verified = False
        if connection is None:
            return
        try:
            connection.disconnect()
            release = getattr(connection, "release", None)
            if release is not None:
                release()
        except self._errors:
            pass  # the card or pcscd is already gone

    def close(self) -> None:
        """Release the PC/SC handle (a leaked one blocks later connects)."""
        with self._lock:
            self._close_connection()

    # ------------------------------------------------------------ PIN

    def _tries_left(self) -> int | None:
        """The card's counter, read with an empty VERIFY: spends nothing. None when already verified."""
        _data, sw = self._transmit(apdu.verify())
        if sw == apdu.SW_OK:
            return None
        if sw == apdu.SW_AUTH_BLOCKED:
            return 0
        tries = apdu.tries_left(sw)
        if tries is None:
            raise CardError(f"reading the PIN counter failed ({sw:04X})")
        return tries

    def _login(self) -> None:
        if self._verified:
            return
        with pin_guard.presenting(self._state_dir):
            self._present_pin()

    def _present_pin(self) -> None:
        number = self._info_number()
        pin_guard.ensure_not_blocked(self._state_dir, number)
        tries = self._tries_left()
        if tries is None:
            self._verified = True
            return
        if tries == 0:
            raise CardLocked(f"card {number} is locked (no PIN tries left); only the issuer can reset it")
        if tries <= 1:
            raise PinLastTry(f"card {number} has one PIN try left; the hub will not risk it")
        pin = self._pin.reveal().encode("utf-8")
        _data, sw = self._transmit(apdu.verify(pin))
        if sw == apdu.SW_OK:
            self._verified = True
            log.info("card %s: PIN accepted", number)
            return
        left = 0 if sw == apdu.SW_AUTH_BLOCKED else apdu.tries_left(sw)
        pin_guard.block(self._state_dir, number, "the card rejected the PIN", left)
        log.error(
            "card %s rejected the PIN (%s tries left); blocked until an operator unblocks it", number, left
        )
        raise PinRejected(
            f"card {number} rejected the PIN, {left} tries left; the hub will not present it again"
        )

    # ------------------------------------------------------------ Signer

    def certificate(self) -> x509.Certificate:
        with self._lock:
            if self._certificate is None:
                self._guarded(self._open)
            assert self._certificate is not None
            return self._certificate

    def sign(self, data: bytes, algorithm: SignatureAlgorithm) -> bytes:
        with self._lock:
            return self._guarded(lambda: self._sign(data, algorithm))

    def _guarded(self, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except self._errors as exc:
            self._close_connection()
            raise CardAbsent(f"PC/SC: {exc}") from None

    def _sign(self, data: bytes, algorithm: SignatureAlgorithm) -> bytes:
        self._open()
        assert self._info is not None and self._certificate is not None
        check_certificate(self._info, self._clock())
        check_key_type(self._info, algorithm)
        if algorithm.key_type == "sm2":
            payload = sm2.message_digest(sm2_public_key(self._certificate), data)
        else:
            digest = algorithm.signature_digest
            payload = digest.digest_info_prefix + digest.compute(data)
        self._login()
        value, sw = self._transmit(apdu.sign(payload))
        if sw == apdu.SW_SECURITY_NOT_SATISFIED:  # the card was reset behind our back: log in again
            self._verified = False
            self._login()
            value, sw = self._transmit(apdu.sign(payload))
        if sw != apdu.SW_OK:
            raise CardError(f"card {self._info.number} refused to sign ({sw:04X})")
        self._signatures += 1
        return value

    def status(self) -> SignerStatus:
        with self._lock:
            status = SignerStatus(kind=self.kind, state="ready", signatures_made=self._signatures)
            try:
                self._open()
                status.tries_left = self._tries_left()
                status.card_present = True
            except self._absent_errors as exc:
                self._close_connection()
                status.state, status.card_present = "card absent", False
                status.warnings.append(str(exc))
            except SignerError as exc:
                status.state = exc.code.lower().replace("_", " ")
            status.reader = self._reader_name or self._reader
            if self._info is None:
                return status
            found = pin_guard.blocks(self._state_dir).get(self._info.number)
            if found is not None:
                status.blocked, status.block_reason = True, found.reason
            if status.state == "ready":
                status.state = self._pin_state(status.tries_left, found is not None)
            return status.with_certificate(self._info, self._clock())

    def _pin_state(self, tries: int | None, blocked: bool) -> str:
        if blocked:
            return "pin blocked"
        if tries == 0:
            return "card locked"
        if tries is not None and tries <= 1:
            return "pin last try"
        try:
            self._pin.reveal()
        except PinMissing:
            return "pin missing"
        return "ready"
