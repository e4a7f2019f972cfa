"""The E-Port client: the local WebSocket JSON-RPC service through which most enterprises reach their card.

Request  {"_method": "cus-sec_SpcSignDataAsPEM", "_id": 7, "args": {"inData": "...", "passwd": "..."}}
Answer   {"_id": 7, "_method": "...", "_status": "00",
          "_args": {"Result": true, "Data": [...], "Error": [...]}}

SpcSignDataAsPEM signs inData with the card's own algorithm (RSA-SHA1 on RSA cards, SM2-SM3 on SM2 cards) and
answers [signature base64, certificate number]; SpcGetSignCertAsPEM answers [certificate base64];
SpcGetCertNo answers [certificate number]. The client verifies the PIN itself and does not tell a wrong PIN
apart reliably, so any refusal that is not plainly "no card" blocks the card in the hub: a PIN that may have
been wrong is never sent again.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from websockets.exceptions import WebSocketException
from websockets.sync.client import ClientConnection, connect

from . import pin_guard
from .algorithms import SignatureAlgorithm
from .base import SignerStatus, check_certificate
from .certificates import CertificateInfo, load_certificate, utcnow
from .errors import (
    CardAbsent,
    ClientFailed,
    ClientUnavailable,
    PinRejected,
    SignerAlgorithmUnsupported,
    SignerError,
)
from .secret import Secret

DEFAULT_URL = "ws://127.0.0.1:61232"
SIGN = "cus-sec_SpcSignDataAsPEM"
GET_CERTIFICATE = "cus-sec_SpcGetSignCertAsPEM"
GET_CERTIFICATE_NUMBER = "cus-sec_SpcGetCertNo"
CARD_ALGORITHMS = {"rsa": "rsa-sha1", "sm2": "sm2-sm3"}
"""What the client signs with, by the card's key type."""
_NO_CARD = ("未插", "未找到", "读卡器", "打开卡", "no card", "not found")
_PIN = ("口令", "密码", "pin", "password")
log = logging.getLogger(__name__)
# websockets logs every frame at DEBUG, and a sign frame carries the PIN: its logger stops at INFO.
_frames_log = logging.getLogger(f"{__name__}.frames")
_frames_log.setLevel(logging.INFO)


class _Refused(Exception):
    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors) or "the client refused without a reason")
        self.errors = errors


class EPortClientSigner:
    kind = "eport-client"

    def __init__(
        self,
        pin: Secret,
        state_dir: str | Path,
        *,
        url: str = DEFAULT_URL,
        timeout: float = 10.0,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self._pin = pin
        self._state_dir = Path(state_dir)
        self.url = url
        self._timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._connection: ClientConnection | None = None
        self._stack = contextlib.ExitStack()
        self._certificate: x509.Certificate | None = None
        self._info: CertificateInfo | None = None
        self._signatures = 0

    def _call(self, method: str, args: dict[str, str]) -> list[str]:
        request_id = next(self._ids)
        try:
            if self._connection is None:
                self._connection = self._stack.enter_context(
                    connect(self.url, open_timeout=self._timeout, max_size=2**24, logger=_frames_log)
                )
            self._connection.send(json.dumps({"_method": method, "_id": request_id, "args": args}))
            deadline = time.monotonic() + self._timeout
            while True:  # the client may push other messages (e.g. a greeting): wait for our id
                answer = json.loads(self._connection.recv(timeout=max(0.0, deadline - time.monotonic())))
                if answer.get("_id") == request_id:
                    break
        except (OSError, TimeoutError, WebSocketException, ValueError) as exc:
            self.close()
            raise ClientUnavailable(f"E-Port client at {self.url}: {exc or type(exc).__name__}") from None
        result: dict[str, Any] = answer.get("_args") or {}
        if not result.get("Result"):
            raise _Refused([str(e) for e in result.get("Error") or []])
        return [str(d) for d in result.get("Data") or []]

    def close(self) -> None:
        self._connection = None
        self._stack.close()

    def _load_certificate(self) -> CertificateInfo:
        if self._info is None:
            try:
                data = self._call(GET_CERTIFICATE, {})
            except _Refused as exc:
                raise self._card_absent_or_failed(exc) from None
            self._certificate = load_certificate(data[0])
            self._info = CertificateInfo.of(self._certificate)
        return self._info

    @staticmethod
    def _card_absent_or_failed(exc: _Refused) -> SignerError:
        if any(word in str(exc).lower() for word in _NO_CARD):
            return CardAbsent(f"E-Port client: {exc}")
        return ClientFailed(f"E-Port client: {exc}")

    def certificate(self) -> x509.Certificate:
        with self._lock:
            self._load_certificate()
            assert self._certificate is not None
            return self._certificate

    def sign(self, data: bytes, algorithm: SignatureAlgorithm) -> bytes:
        with self._lock:
            info = self._load_certificate()
            card_algorithm = CARD_ALGORITHMS.get(info.key_type)
            if card_algorithm != algorithm.name:
                raise SignerAlgorithmUnsupported(
                    f"the E-Port client signs {card_algorithm} with this card, not {algorithm.name}"
                )
            check_certificate(info, self._clock())
            with pin_guard.presenting(self._state_dir):  # each call presents the PIN
                answer = self._present_pin(info, data)
            self._signatures += 1
            return base64.b64decode(answer[0])

    def _present_pin(self, info: CertificateInfo, data: bytes) -> Any:
        pin_guard.ensure_not_blocked(self._state_dir, info.number)
        args = {"inData": data.decode("utf-8"), "passwd": self._pin.reveal()}
        try:
            return self._call(SIGN, args)
        except _Refused as exc:
            failure = self._card_absent_or_failed(exc)
            if failure.transient:
                raise failure from None
            pin_guard.block(self._state_dir, info.number, f"the E-Port client refused: {exc}")
            log.error("E-Port client refused card %s; blocked until an operator unblocks it", info.number)
            if any(word in str(exc).lower() for word in _PIN):
                raise PinRejected(
                    f"card {info.number}: {exc}; the hub will not present the PIN again"
                ) from None
            raise ClientFailed(f"card {info.number}: {exc}; blocked in case the PIN was wrong") from None

    def status(self) -> SignerStatus:
        with self._lock:
            status = SignerStatus(
                kind=self.kind, state="ready", reader=self.url, signatures_made=self._signatures
            )
            try:
                self._info = None  # re-read: the card in the client may have changed
                info = self._load_certificate()
                number = self._call(GET_CERTIFICATE_NUMBER, {})[0]
                status.card_present = True
            except SignerError as exc:
                status.state = "card absent" if isinstance(exc, CardAbsent) else "client unavailable"
                status.card_present = False if isinstance(exc, CardAbsent) else None
                status.warnings.append(str(exc))
                return status
            except _Refused as exc:
                status.state = "client unavailable"
                status.warnings.append(str(exc))
                return status
            if number.lower() != info.number:
                status.warnings.append(
                    f"the client reports certificate number {number}, the certificate {info.number}"
                )
            found = pin_guard.blocks(self._state_dir).get(info.number)
            if found is not None:
                status.state, status.blocked, status.block_reason = "pin blocked", True, found.reason
            return status.with_certificate(info, self._clock())
