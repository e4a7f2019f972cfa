"""Fixtures of the signing tests: keys and certificates, documents, pcscd with the virtual card."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.signing.certificates import load_certificate
from hub.signing.software import SoftwareKeySigner

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures" / "signing"
CARDS = FIXTURES / "cards"
PIN = "88888888"
VPCD_PORT = 35963
READER = "Virtual PCD 00 00"
ENTERPRISES = json.loads((FIXTURES / "enterprises.json").read_text(encoding="utf-8"))


def need(available: bool, what: str) -> None:
    """Skip when a service or tool is missing, unless HUB_REQUIRE_SERVICES=1 says it must be there."""
    if available:
        return
    if os.environ.get("HUB_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{what} is required (HUB_REQUIRE_SERVICES=1); run .ci/setup-pcsc.sh")
    pytest.skip(f"{what} is not available; run .ci/setup-pcsc.sh")


def need_tool(name: str) -> str:
    path = shutil.which(name)
    need(path is not None, f"the {name} command")
    assert path is not None
    return path


def declared_message(seq: int = 1, lines: int = 40) -> bytes:
    """A declared (appStatus 2) insurer message of about 5 KB with the whitespace a person would leave."""
    items = "".join(
        f"\n    <eci:ShipmentLine seq='{i}'>\n      <eci:InvoiceNo>INV-2024-{seq:04d}-{i:03d}</eci:InvoiceNo>"
        f"<eci:HsCode>8517130000</eci:HsCode>\t<eci:AmountUsd>{1000 + i}.50</eci:AmountUsd>\n"
        f"      <eci:Note>样品 &amp; 配件</eci:Note>\n    </eci:ShipmentLine>"
        for i in range(lines)
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<eci:ECI101Message xmlns:eci="urn:sw-eci-hub:insurer:1" guid="6F1D5E0B-2C3A-4B7D-9E8F-0A1B2C3D4E5F"'
        ' version="1.0">\n'
        f"  <eci:Head>\n    <eci:AppType>1</eci:AppType>\n    <eci:AppStatus>2</eci:AppStatus>\n"
        f"    <eci:Seq>{seq}</eci:Seq>\n  </eci:Head>\n  <eci:Body>{items}\n  </eci:Body>\n"
        '  <eci:Sender copCode="91440300MA5TNFGY90" copName="深圳市鹏程远航进出口有限公司"/>\n'
        "</eci:ECI101Message>\n"
    ).encode()


@pytest.fixture(scope="session")
def rsa_signer() -> SoftwareKeySigner:
    return SoftwareKeySigner.from_pem(FIXTURES / "pengcheng-rsa.key.pem", FIXTURES / "pengcheng-rsa.cert.pem")


@pytest.fixture(scope="session")
def sm2_signer() -> SoftwareKeySigner:
    return SoftwareKeySigner.from_pem(FIXTURES / "xinghe-sm2.key.pem", FIXTURES / "xinghe-sm2.cert.pem")


@pytest.fixture(scope="session")
def trusted() -> list:
    return [load_certificate(FIXTURES / n) for n in ("pengcheng-rsa.cert.pem", "xinghe-sm2.cert.pem")]


# ---------------------------------------------------------------- PC/SC


def pcscd_running() -> bool:
    if not Path("/run/pcscd/pcscd.comm").exists():
        return False
    try:
        from smartcard.System import readers

        return READER in [str(r) for r in readers()]
    except Exception:
        return False


@pytest.fixture(scope="session")
def pcsc() -> None:
    try:
        import smartcard  # noqa: F401
    except ImportError:
        need(False, "pyscard (the card extra)")
    need(pcscd_running(), f"pcscd with the vpcd reader {READER!r}")


def card_present(reader: str = READER) -> bool:
    from smartcard.Exceptions import SmartcardException
    from smartcard.System import readers

    for r in readers():
        if str(r) == reader:
            connection = r.createConnection()
            try:
                connection.connect()
            except SmartcardException:
                return False
            connection.disconnect()
            return True
    return False


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.05)


class CardProcess:
    """The virtual card as its own process: start() inserts it, stop() pulls it out."""

    def __init__(self, profile: Path, state: Path) -> None:
        self.profile = profile
        self.state = state
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> CardProcess:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hub.signing.virtual_card", "--profile", str(self.profile),
             "--state", str(self.state), "--port", str(VPCD_PORT)],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_until(card_present)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
        wait_until(lambda: not card_present())

    @property
    def tries_left(self) -> int:
        return int(json.loads(self.state.read_text())["tries_left"])

    def set_tries_left(self, tries: int) -> None:
        self.state.write_text(json.dumps({"tries_left": tries}))


@pytest.fixture
def start_card(pcsc: None, tmp_path: Path) -> Iterator:
    """Start a virtual card from a profile name; every card started is stopped after the test."""
    started: list[CardProcess] = []

    def start(profile: str = "rsa-card", tries_left: int | None = None) -> CardProcess:
        card = CardProcess(CARDS / f"{profile}.json", tmp_path / f"{profile}-state.json")
        if tries_left is not None:
            card.set_tries_left(tries_left)
        started.append(card)
        return card.start()

    yield start
    for card in started:
        card.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
