"""A stand-in for the Windows E-Port client: its WebSocket JSON-RPC in front of a virtual card.

The card logic (PIN counter that persists, signing) is the virtual card's, so a wrong `passwd` costs a try
exactly as it would on the real card. The error texts are this server's own wording.

    python -m hub.signing.eport_test_server --profile fixtures/signing/cards/sm2-card.json --state var/c.json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import threading
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve

from . import apdu, sm2
from .algorithms import ALGORITHMS
from .certificates import certificate_number, load_certificate, sm2_public_key
from .eport_client import CARD_ALGORITHMS, GET_CERTIFICATE, GET_CERTIFICATE_NUMBER, SIGN
from .virtual_card import CardProfile, VirtualCard


class EPortTestServer:
    def __init__(self, card: VirtualCard, host: str = "127.0.0.1", port: int = 0) -> None:
        self.card = card
        self._address = (host, port)
        self._certificate = load_certificate(card.profile.certificate)
        self._loop = asyncio.new_event_loop()
        self._server: Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="eport-test-server", daemon=True)
        self.card_inserted = True

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = next(iter(self._server.sockets)).getsockname()[:2]
        return f"ws://{host}:{port}"

    def start(self) -> EPortTestServer:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=10)
        return self

    async def _serve(self) -> Server:
        # Its frames carry the PIN: never at DEBUG.
        frames = logging.getLogger(f"{__name__}.frames")
        frames.setLevel(logging.INFO)
        return await serve(self._handle, *self._address, logger=frames)

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            asyncio.run_coroutine_threadsafe(self._server.wait_closed(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _handle(self, websocket: ServerConnection) -> None:
        async for message in websocket:
            request = json.loads(message)
            ok, data = self._answer(request.get("_method", ""), request.get("args") or {})
            await websocket.send(
                json.dumps(
                    {
                        "_id": request.get("_id"),
                        "_method": request.get("_method"),
                        "_status": "00",
                        "_args": {"Result": ok, "Data": data if ok else [], "Error": [] if ok else data},
                    },
                    ensure_ascii=False,
                )
            )

    def _answer(self, method: str, args: dict[str, Any]) -> tuple[bool, list[str]]:
        if not self.card_inserted:
            return False, ["[读卡器]未插卡", "Err:Card"]
        card = self.card
        card.process(apdu.select())
        if method == GET_CERTIFICATE:
            return True, [base64.b64encode(card.profile.certificate).decode()]
        if method == GET_CERTIFICATE_NUMBER:
            return True, [certificate_number(self._certificate)]
        if method != SIGN:
            return False, [f"unknown method {method}"]
        answer = card.process(apdu.verify(str(args.get("passwd", "")).encode("utf-8")))
        sw = int.from_bytes(answer[-2:], "big")
        if sw == apdu.SW_AUTH_BLOCKED:
            return False, ["卡已锁定，请联系发卡机构", "Err:Locked"]
        if sw != apdu.SW_OK:
            return False, [f"口令验证失败，剩余重试次数{apdu.tries_left(sw)}", "Err:Pin"]
        message = str(args.get("inData", "")).encode("utf-8")
        algorithm = ALGORITHMS[CARD_ALGORITHMS[_key_type(card)]]
        if algorithm.key_type == "sm2":
            payload = sm2.message_digest(sm2_public_key(self._certificate), message)
        else:
            payload = algorithm.signature_digest.digest_info_prefix + algorithm.signature_digest.compute(
                message
            )
        answer = card.process(apdu.sign(payload))
        card.power_off()  # the client logs the card out after each call
        return True, [base64.b64encode(answer[:-2]).decode(), certificate_number(self._certificate)]


def _key_type(card: VirtualCard) -> str:
    return "sm2" if isinstance(card.profile.key, int) else "rsa"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m hub.signing.eport_test_server", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--profile", required=True, help="card profile JSON")
    parser.add_argument("--state", required=True, help="file that keeps the PIN retry counter")
    parser.add_argument("--port", type=int, default=61232)
    args = parser.parse_args(argv)
    server = EPortTestServer(VirtualCard(CardProfile.load(args.profile), args.state), port=args.port).start()
    print(f"E-Port client test server on {server.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
