"""A virtual E-Port card for tests, speaking vsmartcard vpcd's socket protocol.

The emulator dials vpcd on 127.0.0.1 (port 35963 is the first slot); every message either way is a
2-byte big-endian length and a payload. A one-byte payload from vpcd is a control: 0 power off, 1 power on,
2 reset, 4 "send the ATR". Anything longer is an APDU, answered with a response APDU.

The card holds a key (RSA or SM2), its certificate, and a PIN whose retry counter persists in a state file, so
a wrong PIN costs a try across restarts exactly as on a real card. Stopping the emulator is pulling the card
out; starting it again is putting it back.

    python -m hub.signing.virtual_card --profile fixtures/signing/cards/rsa-card.json --state var/card.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from . import apdu, sm2
from .algorithms import SHA1, SHA256
from .certificates import certificate_der, load_certificate
from .software import PrivateKey, load_private_key

VPCD_PORT = 0x8C7B  # 35963, vpcd's first slot
POWER_OFF, POWER_ON, RESET, GET_ATR = 0, 1, 2, 4
log = logging.getLogger(__name__)
_PREHASHED = {d.digest_info_prefix: d.hash for d in (SHA1, SHA256)}


@dataclass
class CardProfile:
    name: str
    atr: bytes
    key: PrivateKey
    certificate: bytes
    pin: bytes
    max_tries: int = 3

    @classmethod
    def load(cls, path: str | Path) -> CardProfile:
        path = Path(path)
        data = json.loads(path.read_text(encoding="utf-8"))
        base = path.parent
        return cls(
            name=data["name"],
            atr=bytes.fromhex(data["atr"]),
            key=load_private_key((base / data["key"]).read_bytes()),
            certificate=certificate_der(load_certificate(base / data["certificate"])),
            pin=data["pin"].encode("ascii"),
            max_tries=int(data.get("max_tries", 3)),
        )


class VirtualCard:
    """The card's logic: APDU in, response APDU out. The retry counter lives in `state_path`."""

    def __init__(self, profile: CardProfile, state_path: str | Path) -> None:
        self.profile = profile
        self.state_path = Path(state_path)
        self.selected = False
        self.verified = False
        self.signatures = 0
        if not self.state_path.exists():
            self._save_tries(profile.max_tries)

    @property
    def tries_left(self) -> int:
        return int(json.loads(self.state_path.read_text(encoding="utf-8"))["tries_left"])

    def _save_tries(self, tries: int) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"tries_left": tries}), encoding="utf-8")
        os.replace(tmp, self.state_path)  # a crash mid-write must not reset the counter

    def power_off(self) -> None:
        self.selected = self.verified = False

    def process(self, command: bytes) -> bytes:
        if len(command) < 4:
            return _sw(apdu.SW_WRONG_LENGTH)
        cla, ins, p1, p2 = command[:4]
        data = command[5 : 5 + command[4]] if len(command) > 5 else b""
        if cla != apdu.CLA:
            return _sw(apdu.SW_CLA_NOT_SUPPORTED)
        if ins == apdu.INS_SELECT:
            self.selected = p1 == 0x04 and data == apdu.AID
            self.verified = False
            return _sw(apdu.SW_OK if self.selected else apdu.SW_FILE_NOT_FOUND)
        if not self.selected:
            return _sw(apdu.SW_CONDITIONS)
        if ins == apdu.INS_READ_BINARY:
            offset = (p1 << 8) | p2
            certificate = self.profile.certificate
            if offset > len(certificate):
                return _sw(apdu.SW_WRONG_P1P2)
            length = command[4] if len(command) == 5 and command[4] else 256
            return certificate[offset : offset + length] + _sw(apdu.SW_OK)
        if ins == apdu.INS_VERIFY and p2 == apdu.PIN_REFERENCE:
            return self._verify(data)
        if ins == apdu.INS_PSO and (p1, p2) == (0x9E, 0x9A):
            return self._sign(data)
        return _sw(apdu.SW_INS_NOT_SUPPORTED)

    def _verify(self, pin: bytes) -> bytes:
        tries = self.tries_left
        if tries == 0:
            return _sw(apdu.SW_AUTH_BLOCKED)
        if not pin:
            return _sw(apdu.SW_OK if self.verified else 0x63C0 | tries)
        if pin == self.profile.pin:
            self._save_tries(self.profile.max_tries)
            self.verified = True
            return _sw(apdu.SW_OK)
        self._save_tries(tries - 1)
        self.verified = False
        log.info("card %s: wrong PIN, %d tries left", self.profile.name, tries - 1)
        return _sw(apdu.SW_AUTH_BLOCKED if tries == 1 else 0x63C0 | (tries - 1))

    def _sign(self, data: bytes) -> bytes:
        if not self.verified:
            return _sw(apdu.SW_SECURITY_NOT_SATISFIED)
        key = self.profile.key
        if isinstance(key, int):
            if len(data) != 32:
                return _sw(apdu.SW_WRONG_DATA)
            value = sm2.sign_digest(key, data)
        else:
            found = [
                (data[len(prefix) :], hash_algorithm)
                for prefix, hash_algorithm in _PREHASHED.items()
                if data.startswith(prefix) and len(data) == len(prefix) + hash_algorithm.digest_size
            ]
            if not found or not isinstance(key, rsa.RSAPrivateKey):
                return _sw(apdu.SW_WRONG_DATA)
            digest, hash_algorithm = found[0]
            value = key.sign(digest, padding.PKCS1v15(), utils.Prehashed(hash_algorithm))
        self.signatures += 1
        return value + _sw(apdu.SW_OK)


def _sw(sw: int) -> bytes:
    return sw.to_bytes(2, "big")


def _recv_exactly(conn: socket.socket, size: int) -> bytes | None:
    buffer = b""
    while len(buffer) < size:
        chunk = conn.recv(size - len(buffer))
        if not chunk:
            return None
        buffer += chunk
    return buffer


def _serve_connection(card: VirtualCard, conn: socket.socket, stop: threading.Event) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while not stop.is_set():
        # Linux clears TCP_QUICKACK after a while; without it every APDU waits ~40 ms for a delayed ACK
        # because vpcd writes the length and the payload separately.
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        header = _recv_exactly(conn, 2)
        if header is None:
            return
        (size,) = struct.unpack(">H", header)
        payload = _recv_exactly(conn, size) if size else b""
        if payload is None:
            return
        if len(payload) == 1:
            if payload[0] == GET_ATR:
                conn.sendall(struct.pack(">H", len(card.profile.atr)) + card.profile.atr)
            elif payload[0] in (POWER_OFF, RESET):
                card.power_off()
            continue
        answer = card.process(payload)
        conn.sendall(struct.pack(">H", len(answer)) + answer)


class CardSlot:
    """Inserts the card into a vpcd slot: connects to vpcd on loopback and serves it; `remove()` pulls it out.

    vpcd's client mode (DEVICENAME host:port) crashed pcscd 1.9.9 whenever no card was listening, so vpcd
    keeps its stock server mode and the card dials in, reconnecting until removed.
    """

    def __init__(self, card: VirtualCard, host: str = "127.0.0.1", port: int = VPCD_PORT) -> None:
        self.card = card
        self.address = (host, port)
        self._stop = threading.Event()
        self._connection: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, name=f"virtual-card-{port}", daemon=True)

    def insert(self) -> CardSlot:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn = socket.create_connection(self.address, timeout=1)
            except OSError:
                self._stop.wait(0.1)  # vpcd not up yet
                continue
            conn.settimeout(None)
            self._connection = conn
            with conn, contextlib.suppress(OSError):  # vpcd went away (pcscd restarted): dial again
                _serve_connection(self.card, conn, self._stop)
            self.card.power_off()

    def remove(self) -> None:
        self._stop.set()
        if self._connection is not None:
            with contextlib.suppress(OSError):
                self._connection.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m hub.signing.virtual_card", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--profile", required=True, help="card profile JSON (key, certificate, PIN, ATR)")
    parser.add_argument("--state", required=True, help="file that keeps the PIN retry counter")
    parser.add_argument("--port", type=int, default=VPCD_PORT, help="vpcd slot port (default 35963)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    slot = CardSlot(VirtualCard(CardProfile.load(args.profile), args.state), port=args.port).insert()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    log.info("virtual card %s in the vpcd slot at 127.0.0.1:%d", slot.card.profile.name, args.port)
    done.wait()
    slot.remove()


if __name__ == "__main__":
    main()
