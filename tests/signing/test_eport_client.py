"""The E-Port client route, against the JSON-RPC test server standing in for the Windows client."""

from __future__ import annotations

import logging

import pytest

from hub.signing import errors
from hub.signing.eport_client import EPortClientSigner
from hub.signing.eport_test_server import EPortTestServer
from hub.signing.profile import sign_document, verify_document
from hub.signing.secret import Secret
from hub.signing.virtual_card import CardProfile, VirtualCard

from .conftest import CARDS, ENTERPRISES, PIN, declared_message, free_port


@pytest.fixture
def client(tmp_path):
    """Start a test server for a card profile and return (server, signer) with the PIN in a secret file."""
    started: list[tuple[EPortTestServer, EPortClientSigner]] = []

    def make(profile: str = "sm2-card", pin: str = PIN) -> tuple[EPortTestServer, EPortClientSigner]:
        card = VirtualCard(CardProfile.load(CARDS / f"{profile}.json"), tmp_path / f"{profile}-state.json")
        server = EPortTestServer(card).start()
        secret = tmp_path / f"pin-{len(started)}"
        secret.write_text(pin + "\n")
        signer = EPortClientSigner(Secret.from_file(secret), tmp_path / "state", url=server.url, timeout=5)
        started.append((server, signer))
        return server, signer

    yield make
    for server, signer in started:
        signer.close()
        server.stop()


@pytest.mark.parametrize(("profile", "method"), [("sm2-card", "sm2-sm3"), ("rsa-card", "rsa-sha1")])
def test_messages_signed_through_the_client_verify(profile, method, client, trusted):
    _server, signer = client(profile)

    signed = [sign_document(declared_message(seq), signer, method) for seq in range(5)]

    for document in signed:
        verified = verify_document(document, trusted)
        assert verified is not None and verified.algorithm == method


def test_the_client_signs_only_with_the_cards_algorithm(client):
    _server, signer = client("rsa-card")

    with pytest.raises(errors.SignerAlgorithmUnsupported):
        sign_document(declared_message(), signer, "rsa-sha256")


def test_a_wrong_pin_through_the_client_blocks_after_one_try(client, caplog):
    caplog.set_level(logging.DEBUG)
    server, signer = client("sm2-card", pin="11112222")

    with pytest.raises(errors.PinRejected):
        sign_document(declared_message(), signer, "sm2-sm3")
    with pytest.raises(errors.PinBlocked):
        sign_document(declared_message(), signer, "sm2-sm3")

    assert server.card.tries_left == 2
    status = signer.status()
    assert (status.state, status.blocked) == ("pin blocked", True)
    assert "11112222" not in caplog.text


def test_status_names_the_enterprise_and_card_absent_is_transient(client):
    server, signer = client("sm2-card")

    status = signer.status()
    xinghe = ENTERPRISES["xinghe"]
    assert (status.kind, status.state, status.card_present) == ("eport-client", "ready", True)
    assert (status.enterprise_name, status.organisation_code) == (xinghe["name"], xinghe["organisation_code"])
    assert xinghe["holder_id"] not in repr(status.as_dict())

    signer.certificate()
    server.card_inserted = False
    with pytest.raises(errors.CardAbsent) as caught:
        sign_document(declared_message(), signer, "sm2-sm3")
    assert caught.value.transient
    assert signer.status().state == "card absent"


def test_a_client_that_is_not_running_is_transient(tmp_path, monkeypatch):
    monkeypatch.setenv("HUB_TEST_PIN", PIN)
    signer = EPortClientSigner(
        Secret.from_env("HUB_TEST_PIN"), tmp_path, url=f"ws://127.0.0.1:{free_port()}", timeout=2
    )

    with pytest.raises(errors.ClientUnavailable) as caught:
        signer.certificate()

    assert caught.value.transient
    assert signer.status().state == "client unavailable"
