"""The pipeline: what happens to a message between intake and delivery.

intake (store "received" + schedule processing) → process (verify the sender's signature, decode, validate,
dedupe, route, check the conversation, map to the receiver's format, validate, sign, store outbound + receipt)
→ deliver → settle the input file. The process step delivers and settles under its own lease; a delivery or a
settle that fails there becomes a work item of its own under the retry policy. A step's effects and its
completion commit in one transaction, so a crash at any point repeats at most the last step, and every step is
idempotent. A delivery is staged, noted "delivering", then shown to the partner (`_hand_over`): repeated after a
crash, it never shows a message twice.

A partner configured with an envelope (DXP) sends and receives every message in a DxpMsg: the hub unwraps what
it receives (the envelope's node ids checked, the signature checked on the business XML inside), answers each
envelope with the node's DxpRep besides the business receipt, wraps everything it sends after signing, and
notes the partner's DxpReps on the messages they answer. The store keeps the bytes as they travelled.

While the receiver's signer cannot sign (card out, E-Port client down, PIN blocked until an operator
unblocks it), the message waits in "awaiting-signature": its process step is put back as a fresh work item
every retry.wait_seconds, so a wait never counts against the retry policy and never parks. A signer that
could not sign is asked again by one message at a time, at most once a wait; the others wait without touching
it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from cryptography import x509
from lxml import etree
from sqlalchemy import Connection, select
from sqlalchemy.exc import OperationalError

from hub.channels import Channel, ClaimedInput
from hub.config import HUB_ORIGIN, HubConfig
from hub.conversations import Refusal, Verdict, judge
from hub.errors import (
    DELIVERY_FAILED,
    DUPLICATE_MESSAGE,
    FIELD_INVALID,
    INTERNAL_ERROR,
    MALFORMED_XML,
    MESSAGE_EMPTY,
    MESSAGE_TOO_LARGE,
    NO_ROUTE,
    OUT_OF_ORDER,
    RECEIPT_TIMEOUT,
    RETRIES_EXHAUSTED,
    SIGNATURE_CHECK_FAILURES,
    UNKNOWN_REFERENCE,
    WORKER_LOST,
    Disposition,
    FieldError,
    HubError,
    signature_rejected,
    signer_failed,
)
from hub.mappers import MessageFormat
from hub.mappers.dxp import SUCCESS_CODES, AddInfo, Dxp, DxpAnswer, DxpResponse, TransInfo
from hub.mappers.fields import clip
from hub.models import (
    MESSAGE_TYPES,
    CanonicalMessage,
    PolicyIssued,
    PolicyReceipt,
    Receipt,
    ReceiptError,
    ReturnStatus,
    Sender,
)
from hub.models.base import BEIJING, new_message_id
from hub.models.claims import ClaimApplication
from hub.retry import RetryPolicy
from hub.signing import (
    Signer,
    SigningError,
    VerificationError,
    VerifiedSignature,
    certificate_number,
    sign_document,
    verify_document,
)
from hub.store import RECEIPT_TIMEOUT_EVENT, RETRY_EVENT, Store, messages
from hub.workqueue import LeaseLost, WorkItem, WorkQueue

log = logging.getLogger("hub.pipeline")

_MAX_RECEIPT_ERRORS = 20
INTAKE_BATCH = 50  # inputs stored per transaction
# The inputs a worker prepares at once, together, in bytes (at least one, whatever its size): a claim of the
# platform's may carry 54 MB, and a batch holds each one several times over (its bytes, model, mapped copy).
BATCH_BYTES = 64 * 1024 * 1024
RECEIVED = "received"
AWAITING_SIGNATURE = "awaiting-signature"
DELIVERING = "delivering"  # staged at the partner's channel; the store says so before it is shown to the partner
_UNDELIVERED = ("pending", DELIVERING)
_UNDECIDED = (RECEIVED, AWAITING_SIGNATURE)
_NEVER_ANSWERED = ("Receipt", "DxpRep")  # answering an answer is the way to an endless echo


# Inputs that are not documents at all: their own error says more than any signature error could.
_UNREADABLE = {MESSAGE_EMPTY.code, MALFORMED_XML.code}

# Log lines of a transaction's decisions, written once it has committed: a failed batch is decided again, one
# message at a time, and only what was decided is said (each line also cost the writer lock 25 µs).
Said = list[tuple[int, str, tuple[Any, ...]]]


@dataclass(frozen=True)
class Answer:
    """A receipt for an input, in its sender's format and envelope, ready to store and deliver."""

    receipt: Receipt
    payload: bytes
    canonical: str


@dataclass(frozen=True)
class Prepared:
    """An inbound message decoded, with its receiver and the bytes it will receive (None: no route)."""

    message: CanonicalMessage
    destination: str | None
    payload: bytes | None
    # Worked out with the rest before the decisions' lock is taken: its canonical JSON, its version, and the
    # receipt it gets if it is accepted and forwarded (the usual outcome; encoding it took a third of the time
    # a batch held the lock).
    canonical: str
    version: str | None
    verified: VerifiedSignature | None = None  # the sender's signature, checked
    signed: str = ""  # who signed the payload, for its history
    taken: TransInfo | None = None  # the envelope it came in: the node's DxpRep says it was taken
    forwarded: Answer | None = None


@dataclass(frozen=True)
class Refused:
    """Why an inbound message is refused, and the envelope it came in: taken (only what it carries is refused),
    or itself refused (its DxpRep says why, instead of a receipt)."""

    error: HubError
    taken: TransInfo | None = None
    refused: TransInfo | None = None


_NO_ERROR = {"error_code": None, "error_field": None, "error_message": None}  # clears why it waited


def _signed_by(verified: VerifiedSignature) -> str:
    return f"certificate {verified.certificate_number}, {verified.algorithm}"


def _root_name(xml: bytes) -> str:
    """The document's root element name (the envelope's MsgType), read without parsing the rest."""
    _event, root = next(etree.iterparse(io.BytesIO(xml), events=("start",)))
    return str(etree.QName(root).localname)


def _version(message: CanonicalMessage) -> str:
    """The document's version: its content as declared (appTime included) but not its message id. A sender that
    sends a document again under a new id keeps its version; a change, or a new declaration, makes a new one."""
    return hashlib.sha256(message.model_dump_json(by_alias=True, exclude={"message_id"}).encode()).hexdigest()


def _node_verdict(answer: DxpAnswer) -> str:
    said = [f"{answer.code} {answer.info or ''}".strip()]
    said += [f"{r.receiver_id}: {r.code} {r.info or ''}".strip() for r in answer.results]
    return "; ".join(said)


class Pipeline:
    def __init__(
        self,
        config: HubConfig,
        store: Store,
        queue: WorkQueue,
        formats: dict[str, MessageFormat],
        channels: dict[str, Channel],
        signers: Mapping[str, Signer],
        trusted: Mapping[str, Sequence[x509.Certificate]],
        envelopes: Mapping[str, Dxp],
    ) -> None:
        self.config = config
        self.store = store
        self.queue = queue
        self.formats = formats
        self.channels = channels
        self.signers = signers
        self.trusted = trusted  # by partner: the certificates whose signatures the hub believes
        self.envelopes = envelopes  # by partner: the envelope its messages travel in (none: bare XML)
        self.node_ids = {name: p.dxp_id for name, p in config.partners.items() if p.dxp_id is not None}
        # By signer: why it could not sign and when it last failed (monotonic), until it signs again.
        self._cannot_sign: dict[str, tuple[HubError, float]] = {}
        self._asking = {name: threading.Lock() for name in signers}
        self.retry = RetryPolicy(tuple(config.retry.delays_seconds), config.retry.jitter)
        # A route's own policy, by the messages it covers: (type, direction, partner) in and out.
        self.route_retry: dict[tuple[str, str, str], RetryPolicy] = {}
        for route in config.routes:
            if route.retry is not None:
                tiers = config.route_retry(route)
                policy = RetryPolicy(tuple(tiers.delays_seconds), tiers.jitter)
                self.route_retry[(route.message, "in", route.from_partner)] = policy
                self.route_retry[(route.message, "out", route.to_partner)] = policy
        # A step claimed more often than any retry policy allows was lost that often by workers that died or
        # stalled with it (a lease ran out): beyond queue.delivery_limit such losses it is parked as a poison
        # message, not handed to the next worker to kill.
        self.claims_allowed = max(p.max_attempts for p in (self.retry, *self.route_retry.values())) + \
            config.queue.delivery_limit
        self.routes = {(r.message, r.from_partner): r.to_partner for r in config.routes}
        self.hub_sender = Sender(
            cop_code=config.hub.cop_code, cop_name=config.hub.cop_name, dxp_id=config.hub.dxp_id
        )

    # -- intake ---------------------------------------------------------------------------------------

    def take_in(self, claimed: Sequence[ClaimedInput], recovered: bool = False) -> None:
        """Store inputs as received and schedule their processing, once each, whatever crashed before: one
        transaction per batch (a poll may bring hundreds; one each spent the hub's time on commits).
        `recovered`: found in intake/ after a crash, so perhaps stored before it (a fresh poll's hub ids are new)."""
        for start in range(0, len(claimed), INTAKE_BATCH):
            self._take_in(claimed[start:start + INTAKE_BATCH], recovered)

    def _take_in(self, claimed: Sequence[ClaimedInput], recovered: bool) -> None:
        taken = []
        for each in claimed:
            try:
                taken.append((each, each.read(self.config.partners[each.partner].max_message_bytes)))
            except FileNotFoundError:
                continue  # a worker settled it since it was listed, so it was stored
        if not taken:
            return
        # A fresh poll's hub ids are new: nothing to check, so no need to wait for the decisions' lock (on
        # PostgreSQL a batch's decisions hold it for tens of milliseconds). Recovery checks, then writes. Not
        # durable: each input stays in intake/ until it is settled, after its decision's durable commit, and one
        # a server crash forgot is found there and taken in again (Hub._recover); a risk feed's entry stays in its
        # feed, whose cursor passes only delivered entries, and the next sync takes it in again.
        with self.store.begin(serial=recovered, durable=False) as conn:
            if recovered:
                stored = self.store.stored(conn, [each.hub_id for each, _raw in taken])
                taken = [(each, raw) for each, raw in taken if each.hub_id not in stored]
            if taken:
                self.store.add_inputs(
                    conn, [{"id": each.hub_id, "direction": "in", "partner": each.partner, "state": RECEIVED,
                            "file_name": each.name, "size": each.size, "raw": raw} for each, raw in taken],
                    [f"{each.partner}/in/{each.name}, {each.size} bytes" for each, _raw in taken],
                )
                self.queue.enqueue(conn, "process", *(each.hub_id for each, _raw in taken))
        self.queue.notify()
        for each, _raw in taken:
            log.info("received %s/in/%s as %s (%d bytes)", each.partner, each.name, each.hub_id, each.size)

    # -- work -----------------------------------------------------------------------------------------

    def handle(self, items: Sequence[WorkItem]) -> None:
        """Run claimed steps: the process steps together (one decision transaction; their deliveries and
        settles together), the others one by one. Every failure is classified, retried or parked."""
        singles = {"deliver": self._deliver, "resend": self._resend, "settle": self._settle}
        processes = []
        for item in items:
            if item.attempts > self.claims_allowed:
                self._failed(item, HubError(WORKER_LOST, f"{item.kind} was taken {item.attempts} times; the "
                                            "workers that took it died or stalled past their lease"))
            elif item.kind == "process":
                processes.append(item)
            else:
                self._guarded([item], partial(singles[item.kind], item))
        if processes:
            self._process(processes)

    def _guarded(self, items: Sequence[WorkItem], step: Callable[[], None]) -> None:
        try:
            step()
        except LeaseLost as exc:
            log.warning("%s; another worker will finish it", exc)
        except Exception as exc:  # nothing is dropped
            for item in items:
                self._failed(item, exc)

    def _failed(self, item: WorkItem, exc: Exception) -> None:
        if isinstance(exc, HubError):
            err = exc
        else:
            kind = DELIVERY_FAILED if isinstance(exc, OSError | OperationalError) else INTERNAL_ERROR
            err = HubError(kind, f"{type(exc).__name__}: {exc}")
            if kind is INTERNAL_ERROR:
                log.exception("unexpected error in %s of %s", item.kind, item.message)
        with self.store.read() as conn:
            row = self.store.get_message(conn, item.message)
        retry = self.route_retry.get((row.message_type, row.direction, row.partner), self.retry)
        delay = retry.delay_after(item.attempts) if err.disposition is Disposition.RETRY else None
        if delay is not None:
            # One transaction, no wait for the decisions' lock. The history's time is taken before the retry's due
            # time, so the next attempt never comes sooner after it than announced: taken after the release, a
            # release slowed by a loaded machine showed the next attempt 0.07 s after a retry announced at 0.33 s
            # (a CI run; the step itself waited its 0.33 s).
            with self.store.begin(serial=False) as conn:
                self.store.add_event(
                    conn, item.message, RETRY_EVENT,
                    f"{item.kind} attempt {item.attempts} failed: {err}; next in {delay:.2f} s",
                )
                self.queue.retry_later(conn, item, delay, str(err))
            log.warning("%s of %s failed (attempt %d): %s; retry in %.1f s",
                        item.kind, item.message, item.attempts, err, delay)
            return
        if err.disposition is Disposition.RETRY:
            err = HubError(RETRIES_EXHAUSTED, f"{item.attempts} attempts failed; last: {err}", err.field)
        with self.store.begin() as conn:
            self.queue.park(conn, item, str(err))
            if item.kind == "settle":
                self.store.add_event(conn, item.message, "settle-parked", str(err))
            else:
                self.store.set_state(
                    conn, item.message, "parked", str(err),
                    error_code=err.code, error_field=err.field, error_message=err.message,
                )
        log.error("parked %s of %s: %s", item.kind, item.message, err)

    # -- process: decide on inbound messages, a batch at a time ---------------------------------------

    def _process(self, items: list[WorkItem]) -> None:
        """Decide on inbound messages: each prepared (the slow part: verify, decode, map, sign) before the write
        lock is taken, then all decided in one transaction, then delivered and settled together."""
        with self.store.read() as conn:
            rows = self.store.batch_of(conn, [item.message for item in items], BATCH_BYTES)
        self.queue.release([item for item in items if item.message not in rows])  # for the next claim, no attempt spent
        items = [item for item in items if item.message in rows]
        # A slow signer (a card) must not let the batch's last leases run out before they are started.
        started, budget = time.monotonic(), self.config.queue.lease_seconds / 3
        ready = []
        for n, item in enumerate(items):
            if n and time.monotonic() - started > budget:
                self.queue.release(items[n:])
                break
            row = rows[item.message]
            try:
                ready.append((item, row, self._prepare(row) if row.state in _UNDECIDED else None))
            except HubError as err:
                if err.disposition is Disposition.WAIT:
                    self._guarded([item], partial(self._wait, item, row, err))
                else:
                    self._failed(item, err)
            except Exception as exc:
                self._failed(item, exc)
        if ready:
            self._decide(ready)

    def _decide(self, ready: list[tuple[WorkItem, Any, Prepared | Refused | DxpResponse | None]]) -> None:
        ids = [row.id for _item, row, _prepared in ready]
        said: Said = []
        try:
            with self.store.begin() as conn:
                # Looked ahead for every prepared message, with their states: one round trip on PostgreSQL.
                candidates = [(row, prepared) for _item, row, prepared in ready if prepared is not None]
                states = self._look_ahead(conn, ids, candidates)
                for row, prepared in candidates:
                    if states[row.id] in _UNDECIDED:
                        self._decide_one(conn, row, prepared, said)
                decided, pending = self.store.decided(conn, ids)
        except Exception as exc:
            if len(ready) == 1:
                self._failed(ready[0][0], exc)
                return
            # One message's failure (a store error, a defect) must not hold back the others: each on its own.
            log.info("a batch of %d decisions failed (%s: %s); deciding each on its own", len(ready),
                     type(exc).__name__, exc)
            for each in ready:
                self._decide([each])
            return
        for level, text, args in said:
            log.log(level, text, *args)
        items = [item for item, _row, _prepared in ready]
        self._guarded(items, lambda: self._follow_through(items, [decided[i] for i in ids], pending))

    def _look_ahead(self, conn: Connection, ids: list[str],
                    candidates: list[tuple[Any, Prepared | Refused | DxpResponse]]) -> dict[str, str]:
        """The states of messages `ids`, and what _accept may look up for the prepared `candidates`, read together:
        each message id's first sender, each version, each conversation and whether it awaits the sender's
        receipt. A candidate another worker has decided meanwhile is looked up for nothing, and not decided.
        A batch of messages to accept or refuse checks and writes only their own keys (their message ids from
        their senders, their conversations), and locks those alone; a receipt or a node's answer changes what the
        hub sent, and the batch holds every other writer off."""
        accepting = [(row.partner, prepared) for row, prepared in candidates
                     if isinstance(prepared, Prepared) and not isinstance(prepared.message, Receipt)]
        seen = [(sender, each.message.message_id) for sender, each in accepting]
        keys = [(sender, each.message, each.message.business_key(), each.version) for sender, each in accepting]
        keyed = [(sender, message, key, version) for sender, message, key, version in keys
                 if key is not None and version is not None]
        if len(accepting) == sum(not isinstance(prepared, Refused) for _row, prepared in candidates):
            self.store.lock_keys_only(conn, [*(("seen", *each) for each in seen), *(
                ("conversation", message.family, key) for _s, message, key, _v in keys if key is not None)])
        return self.store.look_ahead(
            conn, ids, seen=seen,
            versions=[(message.message_type, key, version) for _s, message, key, version in keyed],
            conversations_=[(message.family, key) for _s, message, key, _v in keyed],
            answers=[(sender, message.family, key) for sender, message, key, _v in keyed])

    def _decide_one(self, conn: Connection, row: Any, prepared: Prepared | Refused | DxpResponse, said: Said) -> None:
        if not isinstance(prepared, DxpResponse) and prepared.taken is not None:
            self._answer_envelope(conn, row, prepared.taken)
        try:
            if isinstance(prepared, Refused):
                raise prepared.error
            if isinstance(prepared, DxpResponse):
                self._take_node_answers(conn, row, prepared)
            elif isinstance(prepared.message, Receipt):
                self._note_verified(conn, row, prepared)
                self._take_receipt(conn, row, prepared.message)
            else:
                self._note_verified(conn, row, prepared)
                self._accept(conn, row, prepared, said)
        except HubError as err:
            if err.disposition is not Disposition.REJECT:
                raise
            self._reject(conn, row, err, prepared.refused if isinstance(prepared, Refused) else None, said)

    def _follow_through(self, items: list[WorkItem], decided: list[Any], pending: list[Any]) -> None:
        """Deliver what the decisions scheduled and settle the inputs, under the process items' leases: no more
        work items, claims and transactions for them. A crash before the items complete runs them again (the
        decisions are kept, what is still pending is delivered, settling twice is harmless); a delivery or settle
        that fails here becomes a work item of its own under the retry policy."""
        delivered, failed = self._hand_over(pending)
        settled: dict[str, str | None] = {}  # by input: where it was filed (None: it was filed before)
        unsettled = []
        for row in decided:
            if row.state in _UNDECIDED:  # a message waiting for its signature has nothing to settle yet
                continue
            try:
                settled[row.id] = self._settle_input(row)
            except OSError as exc:
                log.warning("settling %s/intake/%s failed: %s; it retries on its own", row.partner, row.file_name,
                            exc)
                unsettled.append(row.id)
        # Not serialised with other processes' decisions: nothing here checks before it writes but the deliveries'
        # conditional updates. Not durable: what a server crash makes it forget, the items run again (above).
        with self.store.begin(serial=False, durable=False) as conn:
            self.queue.complete(conn, *items)
            for out, _exc in failed:
                self.queue.enqueue(conn, "deliver", out.id)
            for message in unsettled:
                self.queue.enqueue(conn, "settle", message)
            for message, where in settled.items():
                if where:
                    self.store.add_event(conn, message, "settled", where)
            self._delivered(conn, delivered)  # last: with the transaction's COMMIT
        for out in delivered:
            log.info("delivered %s to %s/out/%s", out.message_type, out.partner, out.file_name)

    def _wait(self, item: WorkItem, row: Any, err: HubError) -> None:
        """The receiver's signer cannot sign now: the same step again later, as a fresh item (no attempt spent)."""
        with self.store.begin() as conn:
            self.queue.complete(conn, item)
            self.queue.enqueue(conn, item.kind, item.message, delay=self.config.retry.wait_seconds)
            if row.state != AWAITING_SIGNATURE or row.error_code != err.code:  # history notes each new reason once
                self.store.set_state(conn, row.id, AWAITING_SIGNATURE, str(err), error_code=err.code,
                                     error_field=err.field, error_message=err.message)
                log.warning("%s/in/%s (%s) waits for its signature: %s", row.partner, row.file_name, row.id, err)

    def _note_verified(self, conn: Connection, row: Any, prepared: Prepared) -> None:
        if prepared.verified is not None:
            self.store.add_event(conn, row.id, "signature-verified", _signed_by(prepared.verified))

    def _prepare(self, row: Any) -> Prepared | Refused | DxpResponse:
        """The message checked and decoded and, where a route takes it, mapped, signed and enveloped for its
        receiver; or the node's answer to an envelope the hub sent; or why it is refused."""
        taken = None
        try:
            if row.raw is None:
                limit = self.config.partners[row.partner].max_message_bytes
                raise HubError(MESSAGE_TOO_LARGE, f"{row.size} bytes is over the limit of {limit} bytes")
            opened = self._open(row)
            if isinstance(opened, DxpResponse):
                return opened
            business, taken = opened
            verified = self._verify(row.partner, business)
            message = self.formats[row.partner].decode(business)
        except HubError as err:
            if err.disposition is not Disposition.REJECT:
                raise
            return self._refused(row, err, taken)
        destination = None if isinstance(message, Receipt) else self.routes.get((message.message_type, row.partner))
        canonical = message.model_dump_json(by_alias=True)
        version = _version(message) if message.business_key() is not None else None
        if destination is None:
            return Prepared(message, None, None, canonical, version, verified, taken=taken)
        payload, signed = self._sign(destination, self.formats[destination].encode(message))
        forwarded = self._receipt(row, message, ReturnStatus.ACCEPTED,
                                  f"{message.message_type} accepted and forwarded to {destination}", [])
        return Prepared(message, destination, self._enveloped(destination, message, payload), canonical, version,
                        verified, signed, taken, forwarded)

    def _open(self, row: Any) -> tuple[bytes, TransInfo | None] | DxpResponse:
        """The business XML and the envelope it came in (none from a bare partner); or the node's answer."""
        dxp = self.envelopes.get(row.partner)
        if dxp is None:
            return row.raw, None
        got = dxp.receive(row.raw)
        if isinstance(got, DxpResponse):
            return got
        info, node, hub = got.trans_info, self.node_ids[row.partner], self.config.hub.dxp_id
        if info.sender_id != node:
            raise HubError(UNKNOWN_REFERENCE, f"SenderId {info.sender_id!r} is not {row.partner}'s node {node!r}",
                           "/DxpMsg/TransInfo/SenderId", message_type="DxpMsg")
        if hub not in info.receiver_ids:
            raise HubError(UNKNOWN_REFERENCE, f"the envelope is for {', '.join(info.receiver_ids)}, not the hub's "
                           f"node {hub!r}", "/DxpMsg/TransInfo/ReceiverIds", message_type="DxpMsg")
        return got.business_xml, info

    def _refused(self, row: Any, err: HubError, taken: TransInfo | None) -> Refused:
        """A refusal, with the envelope it answers: a refused envelope is answered by the node's DxpRep when
        its TransInfo can be read (else by the format-error receipt, enveloped); a refused DxpRep, never."""
        dxp = self.envelopes.get(row.partner)
        if dxp is None or taken is not None or row.raw is None or err.message_type in _NEVER_ANSWERED:
            return Refused(err, taken)
        return Refused(err, refused=dxp.trans_info_of(row.raw))

    def _verify(self, partner: str, raw: bytes) -> VerifiedSignature | None:
        """The sender's signature, checked before a word of the message is believed."""
        signing = self.config.partners[partner].signing
        if not signing.verifies:
            return None
        try:
            return verify_document(raw, self.trusted[partner], require=signing.require_signature)
        except VerificationError as exc:
            # Decoded only to address the rejection receipt: nothing in it is acted on.
            try:
                message = self.formats[partner].decode(raw)
            except HubError as err:
                if err.code in _UNREADABLE:  # not a document at all: say so, not that its signature is bad
                    raise err from None
                raise signature_rejected(exc, err.message_id, err.message_type) from None
            raise signature_rejected(exc, message.message_id, message.message_type) from None

    def _enveloped(self, partner: str, message: CanonicalMessage, payload: bytes) -> bytes:
        """The bytes `partner` receives: the payload itself, or the payload in the partner's envelope (its
        CopMsgId the message id, so the node's DxpRep finds the message it answers)."""
        dxp = self.envelopes.get(partner)
        if dxp is None:
            return payload
        return dxp.wrap(
            payload, sender_id=self.config.hub.dxp_id, receiver_ids=[self.node_ids[partner]],
            msg_type=_root_name(payload), cop_msg_id=message.message_id, created=datetime.now(BEIJING),
            add_info=AddInfo(file_name=self._file_name(partner, message)),
        )

    def _sign(self, partner: str, payload: bytes) -> tuple[bytes, str]:
        """The payload signed by the partner's signer (if it has one), and who signed it."""
        name = self.config.partners[partner].signing.signer
        if name is None:
            return payload, ""
        algorithm = self.config.signers[name].algorithm
        known = self._cannot_sign.get(name)
        if known is not None:
            why, failed_at = known
            # A signer that could not sign is asked again by one message at a time, at most once a wait (a batch's
            # messages would otherwise each ask in turn, each waiting out the card's timeout); the others wait.
            if time.monotonic() - failed_at < self.config.retry.wait_seconds or \
                    not self._asking[name].acquire(blocking=False):
                raise dataclasses.replace(why)
        try:
            signed = sign_document(payload, self.signers[name], algorithm)
        except SigningError as exc:
            err = signer_failed(exc)
            if err.disposition is Disposition.WAIT:
                self._cannot_sign[name] = (err, time.monotonic())
            raise err from None
        finally:
            if known is not None:
                self._asking[name].release()
        if self._cannot_sign.pop(name, None) is not None:
            log.info("signer %s signs again", name)
        number = certificate_number(self.signers[name].certificate())
        return signed, f"signed by {name}: certificate {number}, {algorithm}"

    def _accept(self, conn: Connection, row: Any, prepared: Prepared, said: Said) -> None:
        message, destination = prepared.message, prepared.destination
        sender, fmt = row.partner, self.formats[row.partner]
        mtype, mid, canonical = message.message_type, message.message_id, prepared.canonical

        def refuse(code: Any, text: str, *loc: str | int) -> HubError:
            return HubError(code, text, fmt.field_path(mtype, loc), message_id=mid, message_type=mtype)

        first = self.store.first_seen(conn, sender, mid)
        if first:
            raise self._duplicate(conn, first, canonical, refuse)
        if destination is None or prepared.payload is None:
            raise refuse(NO_ROUTE, f"no route takes {mtype} from {sender}", "messageId")
        key, version = message.business_key(), prepared.version
        earlier = self.store.first_version(conn, mtype, key, version) if key and version else None
        # A version taken before is answered as it was, whatever state the conversation has moved on to.
        verdict = None if earlier else self._judge(conn, message, refuse)

        # Every check has passed: record the decision, the onward message and the receipt together.
        self.store.mark_seen(conn, sender, mid, row.id)
        self.store.set_state(
            conn, row.id, "accepted", f"{mtype} {mid}" + (f", the same version as {earlier}" if earlier else ""),
            message_id=mid, message_type=mtype, family=message.family, business_key=key,
            canonical=canonical, **_NO_ERROR,
        )
        if key is not None:  # an answer in the conversation is a receipt for what the hub sent there
            self.store.answered_in_conversation(conn, sender, message.family, key)
        if verdict is None:
            assert earlier is not None
            original = self.store.get_message(conn, earlier)
            receipt = self.store.receipt_of(conn, earlier)
            info = (f"{mtype} {key} acknowledged again: it repeats message {original.message_id}, accepted before "
                    f"(receipt {receipt.message_id if receipt else 'none'}); not forwarded again")
            self._answer(conn, row, self._receipt(row, message, ReturnStatus.ACCEPTED, info, []))
            said.append((logging.INFO, "%s %s from %s repeats %s: answered, not forwarded",
                         (mtype, mid, sender, original.message_id)))
            return
        if key is not None and version is not None:
            self.store.mark_version(conn, mtype, key, version, row.id)
            enterprise = getattr(message, "enterprise", None)
            self.store.set_conversation(conn, message.family, key, enterprise.uscc if enterprise else "",
                                        verdict.becomes, verdict.opens)
        if isinstance(message, PolicyIssued):  # claims name the policy by its number, not by its proposal
            self.store.add_reference(conn, "policy", message.policy_no, row.id)
        if verdict.repeat:
            answer = self._receipt(row, message, ReturnStatus.ACCEPTED,
                                   f"{mtype} acknowledged again: it was already received and forwarded", [])
        else:
            self._send(conn, destination, message, prepared.payload, answers=row.id, detail=prepared.signed,
                       canonical=canonical)
            assert prepared.forwarded is not None
            answer = prepared.forwarded
        self._answer(conn, row, answer)
        said.append((logging.INFO, "accepted %s %s from %s (%s)", (mtype, mid, sender, answer.receipt.return_info)))

    def _duplicate(self, conn: Connection, first: str, canonical: str, refuse: Any) -> HubError:
        """A message id taken before. The copy is refused DUPLICATE_MESSAGE either way, so nothing is processed
        twice (issue 2). When it is the same message (its sender, having missed the answer, sent it again), the
        original's receipt is delivered again too, the same bytes under the same name, so the sender gets it
        (issue 5); a different message under a used id gets only the refusal: the original's receipt does not
        answer it."""
        original = self.store.get_message(conn, first)
        said = f"message {original.message_id} was already received from {original.partner} (hub id {first})"
        if original.canonical != canonical:
            return refuse(DUPLICATE_MESSAGE, f"{said} with other content: a message id names one message",
                          "messageId")
        receipt = self.store.receipt_of(conn, first)
        if receipt is None:
            return refuse(DUPLICATE_MESSAGE, said, "messageId")
        self.queue.enqueue(conn, "resend", receipt.id)
        return refuse(DUPLICATE_MESSAGE, f"{said} and {original.state}: its receipt {receipt.message_id} is sent "
                      "again; this copy is not processed", "messageId")

    def _judge(self, conn: Connection, message: CanonicalMessage, refuse: Any) -> Verdict:
        key = message.business_key()
        if key is None:
            return Verdict("", repeat=False)
        where = type(message).key_location()
        label = f"{'.'.join(where)} {key}"
        conversation = self.store.conversation(conn, message.family, key)
        verdict = judge(message, conversation.state if conversation else None)
        if isinstance(verdict, Refusal):
            raise refuse(verdict.error, f"{label}: {verdict.reason}", *where)
        enterprise = getattr(message, "enterprise", None)
        if conversation is not None and enterprise is not None and enterprise.uscc != conversation.enterprise:
            raise refuse(UNKNOWN_REFERENCE,
                         f"{label} belongs to enterprise {conversation.enterprise}, not {enterprise.uscc}",
                         "enterprise", "uscc")
        if isinstance(message, PolicyReceipt):
            policy = self._issued_policy(conn, message.policy_no)
            if policy is None or policy["proposalNo"] != key:
                raise refuse(UNKNOWN_REFERENCE, f"policy {message.policy_no} was not issued under {label}", "policyNo")
        if isinstance(message, ClaimApplication):
            self._claim_preconditions(conn, message, refuse)
        return verdict

    def _claim_preconditions(self, conn: Connection, claim: ClaimApplication, refuse: Any) -> None:
        """A claim needs an effective policy of the same enterprise covering its shipments, and a signed
        service agreement (DOMAIN.md §5)."""
        policy = self._issued_policy(conn, claim.policy_no)
        if policy is None:
            raise refuse(UNKNOWN_REFERENCE, f"policy {claim.policy_no} was never issued through the hub", "policyNo")
        if policy["enterprise"]["uscc"] != claim.enterprise.uscc:
            raise refuse(UNKNOWN_REFERENCE, f"policy {claim.policy_no} belongs to enterprise "
                         f"{policy['enterprise']['uscc']}, not {claim.enterprise.uscc}", "policyNo")
        for n, shipment in enumerate(claim.shipments):
            if not policy["validFrom"] <= shipment.shipped_on.isoformat() <= policy["validTo"]:
                raise refuse(FIELD_INVALID, f"shipped on {shipment.shipped_on}, outside policy {claim.policy_no}'s "
                             f"validity {policy['validFrom']} to {policy['validTo']}", "shipments", n, "shippedOn")
        if not self.store.enterprise_in_state(conn, "agreement", claim.enterprise.uscc, "signed"):
            raise refuse(OUT_OF_ORDER, f"enterprise {claim.enterprise.uscc} has no signed service agreement "
                         "(签约): a claim needs one", "enterprise", "uscc")

    def _issued_policy(self, conn: Connection, policy_no: str) -> dict[str, Any] | None:
        """The accepted PolicyIssued for this policy number (the store has it by its proposal: look it up by
        the reference recorded when it was accepted)."""
        canonical = self.store.referenced(conn, "policy", policy_no)
        return json.loads(canonical) if canonical else None

    def _take_receipt(self, conn: Connection, row: Any, receipt: Receipt) -> None:
        """A partner's receipt for something the hub delivered: note it on that message; never answer it."""
        answered = conn.execute(
            select(messages.c.id).where(
                messages.c.direction == "out", messages.c.partner == row.partner,
                messages.c.message_id == receipt.ref_message_id,
            )
        ).scalar()
        if answered is None:
            raise HubError(
                UNKNOWN_REFERENCE,
                f"the receipt answers message {receipt.ref_message_id}, which the hub never sent to {row.partner}",
                self.formats[row.partner].field_path("Receipt", ("refMessageId",)),
                message_id=receipt.message_id, message_type="Receipt",
            )
        good = receipt.return_status in (ReturnStatus.RECEIVED, ReturnStatus.ACCEPTED, ReturnStatus.CONCLUDED,
                                          ReturnStatus.FINAL)
        self.store.stop_awaiting(conn, answered)
        self.store.set_state(conn, answered, "acknowledged" if good else "refused",
                             f"receipt {receipt.return_status.value}: {receipt.return_info}")
        self.store.set_state(conn, row.id, "accepted", f"receipt for {receipt.ref_message_id}",
                             message_id=receipt.message_id, message_type="Receipt", family="receipt",
                             canonical=receipt.model_dump_json(by_alias=True))

    def _take_node_answers(self, conn: Connection, row: Any, response: DxpResponse) -> None:
        """A partner's node answering envelopes the hub sent: noted on each message; never answered. A refusal
        leaves the message "refused": no business receipt will come for it."""
        answered = []
        for n, answer in enumerate(response.answers, start=1):
            cop_msg_id = answer.original.cop_msg_id
            found = conn.execute(
                select(messages.c.id).where(
                    messages.c.direction == "out", messages.c.partner == row.partner,
                    messages.c.message_id == cop_msg_id,
                )
            ).scalar()
            if found is None:
                raise HubError(
                    UNKNOWN_REFERENCE, f"the DxpRep answers envelope {cop_msg_id}, which the hub never sent to "
                    f"{row.partner}", f"/DxpRep/Response[{n}]/OriHead/CopMsgId", message_type="DxpRep",
                )
            answered.append((found, answer))
        success = self.config.partners[row.partner].dxp_success_codes or SUCCESS_CODES
        for message, answer in answered:
            if answer.succeeded(success):
                self.store.add_event(conn, message, "taken-by-node", f"taken by the node: {_node_verdict(answer)}")
            else:  # no business receipt will come for it
                self.store.set_state(conn, message, "refused", f"refused by the node: {_node_verdict(answer)}")
                self.store.stop_awaiting(conn, message)
        self.store.set_state(conn, row.id, "accepted",
                             f"DxpRep for {', '.join(a.original.cop_msg_id for _, a in answered)}",
                             message_type="DxpRep", family="envelope")

    def _reject(self, conn: Connection, row: Any, err: HubError, envelope: TransInfo | None, said: Said) -> None:
        """Refused: the store says why, and so does the answer (the receipt; for a refused envelope whose
        TransInfo reads, the node's DxpRep)."""
        known = MESSAGE_TYPES.get(err.message_type or "")  # its family too, so /metrics does not call it unread
        self.store.set_state(
            conn, row.id, "rejected", str(err),
            error_code=err.code, error_field=err.field, error_message=err.message,
            message_id=err.message_id, message_type=err.message_type, family=known.family if known else row.family,
        )
        said.append((logging.WARNING, "rejected %s/in/%s (%s): %s", (row.partner, row.file_name, row.id, err)))
        if envelope is not None:
            self._answer_envelope(conn, row, envelope, refusal=err)
        elif err.message_type not in _NEVER_ANSWERED:
            signature = err.error in SIGNATURE_CHECK_FAILURES
            status = ReturnStatus.SIGNATURE_CHECK_FAILED if signature else ReturnStatus.REJECTED
            self._answer(conn, row, self._receipt(row, None, status, f"{err.code}: {err.message}", err.errors,
                                                  ref_id=err.message_id, ref_type=err.message_type))

    def _answer(self, conn: Connection, row: Any, answer: Answer) -> None:
        self._send(conn, row.partner, answer.receipt, answer.payload, answers=row.id, canonical=answer.canonical)

    def _receipt(
        self, row: Any, message: CanonicalMessage | None, status: ReturnStatus, info: str,
        errors: list[FieldError], ref_id: str | None = None, ref_type: str | None = None,
    ) -> Answer:
        now = datetime.now(BEIJING)
        receipt = Receipt(
            message_id=new_message_id(), created_at=now, sender=self.hub_sender,
            ref_message_id=message.message_id if message else ref_id,
            ref_message_type=message.message_type if message else ref_type,
            ref_file_name=clip(row.file_name, 255) if row.file_name else None,
            ref_business_key=message.business_key() if message else None,
            return_status=status, return_time=now, return_info=clip(info, 1000),
            errors=[
                ReceiptError(code=e.code, field=clip(e.field, 300), message=clip(e.message, 1000))
                for e in errors[:_MAX_RECEIPT_ERRORS]
            ],
        )
        payload = self._enveloped(row.partner, receipt, self.formats[row.partner].encode(receipt))
        return Answer(receipt, payload, receipt.model_dump_json(by_alias=True))

    def _answer_envelope(
        self, conn: Connection, row: Any, received: TransInfo, refusal: HubError | None = None
    ) -> None:
        """The node's answer (DxpRep) to an envelope the partner sent: taken, or refused and why."""
        payload = self.envelopes[row.partner].respond(received, notice_date=datetime.now(BEIJING).date(),
                                                      refusal=refusal)
        self._schedule(conn, row.partner, payload, row.id, f"answers envelope {received.cop_msg_id}",
                       message_type="DxpRep", family="envelope", file_name=f"DxpRep_{row.id}.xml")

    def originate(self, conn: Connection, message: CanonicalMessage) -> str:
        """A message the hub writes itself (a scheduled job's statistics), sent where its route from the hub
        says: mapped, signed and enveloped as a forwarded one is, stored and scheduled for delivery in the
        caller's transaction, so the caller's own record of it commits with it. Returns the receiver."""
        destination = self.routes.get((message.message_type, HUB_ORIGIN))
        if destination is None:
            raise HubError(NO_ROUTE, f"no route takes {message.message_type} from the hub")
        payload, signed = self._sign(destination, self.formats[destination].encode(message))
        out = self._send(conn, destination, message, self._enveloped(destination, message, payload), None, signed)
        self.queue.enqueue(conn, "deliver", out)  # no process step of an input will deliver it
        return destination

    def _file_name(self, partner: str, message: CanonicalMessage) -> str:
        return f"{message.message_type}_{message.message_id}{self.formats[partner].file_suffix}"

    def _send(
        self, conn: Connection, partner: str, message: CanonicalMessage, payload: bytes, answers: str | None,
        detail: str = "", canonical: str | None = None,
    ) -> str:
        return self._schedule(
            conn, partner, payload, answers, detail,
            message_id=message.message_id, message_type=message.message_type, family=message.family,
            business_key=message.business_key(), file_name=self._file_name(partner, message),
            canonical=canonical or message.model_dump_json(by_alias=True),
        )

    def _schedule(self, conn: Connection, partner: str, payload: bytes, answers: str | None, detail: str,
                  **described: Any) -> str:
        """Store the bytes exactly as they will be delivered (the outbox): the process step that stored them
        delivers them before it completes. Returns the stored message's hub id."""
        return self.store.add_message(conn, direction="out", partner=partner, state="pending", size=len(payload),
                               raw=payload, answers=answers, event_detail=detail, **described)

    # -- deliver and settle ---------------------------------------------------------------------------

    def _hand_over(self, outs: list[Any]) -> tuple[list[Any], list[tuple[Any, OSError]]]:
        """Deliver outbound messages exactly once, whatever crashes: each is staged (a file partners ignore),
        the store notes them "delivering", then each is published (one rename). Run again after a crash, a
        message noted "delivering" whose staged file is gone was published: it is not shown twice. Returns
        (delivered, failed): a failure retries on its own under the retry policy."""
        staged: list[Any] = []
        failed: list[tuple[Any, OSError]] = []
        for out in outs:
            try:
                if out.state != DELIVERING:
                    self.channels[out.partner].stage(out.file_name, out.raw)
                staged.append(out)
            except OSError as exc:
                self._not_delivered(out, exc)
                failed.append((out, exc))
        fresh = [out.id for out in staged if out.state != DELIVERING]
        if fresh:
            with self.store.one_statement() as conn:
                moved = self.store.advance_all(conn, fresh, "pending", DELIVERING)
            # One that moved on meanwhile (another worker's, after a lease ran out) is not this worker's to show.
            staged = [out for out in staged if out.state == DELIVERING or out.id in moved]
        delivered = []
        for out in staged:
            try:
                self.channels[out.partner].publish(out.file_name)
                delivered.append(out)
            except OSError as exc:
                self._not_delivered(out, exc)
                failed.append((out, exc))
        return delivered, failed

    @staticmethod
    def _not_delivered(out: Any, exc: OSError) -> None:
        log.warning("delivery of %s to %s/out/%s failed: %s; it retries on its own", out.message_type, out.partner,
                    out.file_name, exc)

    def _deliver(self, item: WorkItem) -> None:
        with self.store.read() as conn:
            row = self.store.get_message(conn, item.message)
        delivered: list[Any] = []
        if row.state in _UNDELIVERED:
            delivered, failed = self._hand_over([row])
            if failed:
                raise failed[0][1]  # under the retry policy
        with self.store.begin() as conn:
            self.queue.complete(conn, item)
            self._delivered(conn, delivered)  # none: it was delivered before, or another worker's since
        if delivered:
            log.info("delivered %s to %s/out/%s", row.message_type, row.partner, row.file_name)

    def _delivered(self, conn: Connection, outs: list[Any]) -> None:
        """Note the deliveries, and the receipts they now await, as the transaction's last statements. One whose
        partner's receipt came (and was noted) since its bytes landed keeps its state."""
        if not outs:
            return
        now, awaiting = time.time(), dict[float, list[str]]()
        for out in outs:
            self.store.add_event(conn, out.id, "delivered", f"{out.partner}/out/{out.file_name}")
            if out.message_type not in _NEVER_ANSWERED:
                due = now + self.config.partners[out.partner].receipt_timeout_seconds
                awaiting.setdefault(due, []).append(out.id)
        self.store.note_delivered(conn, [out.id for out in outs], awaiting)

    def _resend(self, item: WorkItem) -> None:
        """Deliver a delivered message again: the same bytes under the same name, the same message id, so the
        receiver can tell. A message awaiting its receipt is resent while the partner's resends last, then
        parked RECEIPT_TIMEOUT; a receipt (answering a message its sender sent again) whenever asked."""
        with self.store.read() as conn:
            row = self.store.get_message(conn, item.message)
            awaited = self.store.awaited(conn, row.id)
        if row.state in _UNDELIVERED:  # replayed after it was parked: delivered afresh, its resends counted afresh
            self._deliver(item)
            return
        chased = row.message_type not in _NEVER_ANSWERED
        if chased and (awaited is None or row.state != "delivered"):  # its receipt came meanwhile
            with self.store.begin() as conn:
                self.queue.complete(conn, item)
            return
        partner = self.config.partners[row.partner]
        target = f"{row.partner}/out/{row.file_name}"
        if chased and awaited.resends >= partner.receipt_resends:
            raise HubError(RECEIPT_TIMEOUT, f"no receipt from {row.partner} for {row.message_type} "
                           f"{row.message_id} ({target}) within {partner.receipt_timeout_seconds:g} s of its "
                           f"delivery nor of any of its {awaited.resends} resends")
        self.channels[row.partner].deliver(row.file_name, row.raw)
        with self.store.begin() as conn:
            if chased:
                self.store.postpone_receipt(conn, row.id, time.time() + partner.receipt_timeout_seconds, resent=True)
                why = (f"no receipt within {partner.receipt_timeout_seconds:g} s (resend {awaited.resends + 1} of "
                       f"{partner.receipt_resends})")
            else:
                why = "its message came again"
            self.store.add_event(conn, row.id, "resent", f"{why}: {target}, {len(row.raw)} bytes")
            self.queue.complete(conn, item)
        log.info("resent %s %s to %s", row.message_type, row.message_id, target)

    def sweep_overdue_receipts(self, now: float | None = None) -> int:
        """Schedule a resend of every delivered message whose receipt is overdue (the resend parks it as
        RECEIPT_TIMEOUT once the partner's resends are spent); returns how many. Idempotent and safe with several
        hub processes: in one serialised write transaction each due time moves on before its resend is
        scheduled, so another sweep, here or in another process, finds nothing due."""
        now = time.time() if now is None else now
        with self.store.read() as conn:  # most sweeps find nothing: they need not wait for the write lock
            if not self.store.overdue_receipts(conn, now, limit=1):
                return 0
        with self.store.begin() as conn:
            overdue = self.store.overdue_receipts(conn, now)
            for message, partner in overdue:
                timeout = self.config.partners[partner].receipt_timeout_seconds
                self.store.postpone_receipt(conn, message, now + timeout)
                self.store.add_event(conn, message, RECEIPT_TIMEOUT_EVENT,
                                     f"no receipt from {partner} within {timeout:g} s: resend scheduled")
                self.queue.enqueue(conn, "resend", message)
        if overdue:
            log.warning("%d receipts overdue: resends scheduled", len(overdue))
        return len(overdue)

    def _settle(self, item: WorkItem) -> None:
        with self.store.read() as conn:
            row = self.store.get_message(conn, item.message)
        settled = self._settle_input(row)
        with self.store.begin() as conn:
            if settled:
                self.store.add_event(conn, row.id, "settled", settled)
            self.queue.complete(conn, item)

    def _settle_input(self, row: Any) -> str | None:
        """File the input where it belongs (archive/, or rejected/ beside its errors); where it went, or None if
        it was filed before."""
        accepted = row.state == "accepted"
        error = None
        if not accepted:
            with self.store.read() as conn:
                receipt = conn.execute(
                    select(messages.c.canonical).where(messages.c.answers == row.id,
                                                       messages.c.message_type == "Receipt")
                ).scalar()
            field = row.error_field or ""
            # A refused envelope is answered by a DxpRep, not a receipt: its one error is the row's.
            found = json.loads(receipt)["errors"] if receipt else [
                {"code": row.error_code, "field": field, "message": row.error_message}]
            error = {"code": row.error_code, "message": row.error_message, "field": field, "errors": found}
        if not self.channels[row.partner].settle(row.file_name, row.id, accepted, error):
            return None
        return f"{row.partner}/{'archive' if accepted else 'rejected'}/{row.file_name}"
