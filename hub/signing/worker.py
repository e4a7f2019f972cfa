"""One worker per card: requests are serialised through a bounded queue, each with a deadline.

A card is a slow, single, serial device. While it is out (a transient error), the request at the head waits
and is retried until the card is back or its deadline passes; the queue behind it waits too. Permanent errors
(PIN blocked, certificate expired, ...) fail the request at once.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from cryptography import x509

from .algorithms import SignatureAlgorithm
from .base import Signer, SignerStatus
from .errors import DeadlineExceeded, QueueFull, SignerClosed, SignerError

log = logging.getLogger(__name__)


@dataclass
class _Request:
    data: bytes
    algorithm: SignatureAlgorithm
    deadline: float
    future: Future[bytes] = field(default_factory=Future)


class SigningWorker:
    """Wraps a signer; is itself a Signer, so the pipeline does not know the difference."""

    def __init__(
        self,
        signer: Signer,
        *,
        max_queue: int = 100,
        timeout: float = 300.0,
        retry_interval: float = 0.25,
        name: str = "card",
    ) -> None:
        """`timeout`: how long a request may wait, queue and absent card included (DEADLINE_EXCEEDED)."""
        self.signer = signer
        self.timeout = timeout
        self.retry_interval = retry_interval
        self._queue: queue.Queue[_Request | None] = queue.Queue(maxsize=max_queue)
        self._waiting_on: SignerError | None = None
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"signing-worker-{name}", daemon=True)
        self._thread.start()

    def submit(
        self, data: bytes, algorithm: SignatureAlgorithm, *, timeout: float | None = None
    ) -> Future[bytes]:
        if self._closed.is_set():
            raise SignerClosed("the signing worker is closed")
        request = _Request(data, algorithm, time.monotonic() + (self.timeout if timeout is None else timeout))
        try:
            self._queue.put_nowait(request)
        except queue.Full:
            raise QueueFull(f"{self._queue.maxsize} signatures are already waiting for the card") from None
        return request.future

    def sign(self, data: bytes, algorithm: SignatureAlgorithm) -> bytes:
        return self.submit(data, algorithm).result()

    def certificate(self) -> x509.Certificate:
        """The signer's certificate; waits (up to the timeout) while the card is out."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                return self.signer.certificate()
            except SignerError as exc:
                if not exc.transient or time.monotonic() + self.retry_interval > deadline:
                    raise
                time.sleep(self.retry_interval)

    def status(self) -> SignerStatus:
        status = self.signer.status()
        status.queue_depth = self._queue.qsize()
        if self._waiting_on is not None and status.state == "ready":
            status.state = self._waiting_on.code.lower().replace("_", " ")
        return status

    def close(self, timeout: float = 5.0) -> None:
        """Stop taking requests; the ones still queued fail with the transient SIGNER_CLOSED."""
        self._closed.set()
        while True:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                break
            if request is not None:
                request.future.set_exception(SignerClosed("the signing worker closed before signing"))
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            request = self._queue.get()
            if request is None:
                return
            if request.future.set_running_or_notify_cancel():
                self._serve(request)

    def _serve(self, request: _Request) -> None:
        while True:
            if time.monotonic() > request.deadline:
                request.future.set_exception(
                    DeadlineExceeded(f"no signature within the deadline ({self._waiting_on or 'queue'})")
                )
                return
            try:
                value = self.signer.sign(request.data, request.algorithm)
            except SignerError as exc:
                if exc.transient and not self._closed.is_set():
                    if self._waiting_on is None:
                        log.warning("signing waits: %s", exc)
                    self._waiting_on = exc
                    time.sleep(self.retry_interval)
                    continue
                request.future.set_exception(exc)
            except Exception as exc:  # a bug in a signer must fail its request, not kill the worker
                log.exception("signer failed")
                request.future.set_exception(exc)
            else:
                request.future.set_result(value)
            if self._waiting_on is not None:
                log.info("signing resumed")
                self._waiting_on = None
            return
