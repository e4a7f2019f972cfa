from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hub.config import DEFAULT_CONFIG, ConfigError, load_config
from hub.models import MESSAGE_TYPES
from hub.schemas import SchemaLoadError, SchemaRegistry, SchemaSource
from tests.conftest import REPO, needs

REFERENCE_XSD = REPO.parent / "shared" / "reference" / "chinaport-ceb-202205" / "xsd"


def test_the_embedded_default() -> None:
    config = load_config(DEFAULT_CONFIG, environ={})
    assert config.store.url == "sqlite:///var/hub.db"
    assert (config.status.host, config.status.port) == ("127.0.0.1", 8470)
    assert set(config.partners) == {"platform", "insurer", "customs"}
    assert {str(p.channel.root) for p in config.partners.values()} == {
        "var/exchange/platform", "var/exchange/insurer", "var/exchange/customs"
    }
    assert config.queue.kind == "db"


def test_environment_overrides_any_key() -> None:
    config = load_config(DEFAULT_CONFIG, environ={
        "HUB_STATUS__PORT": "9001",
        "HUB_STATUS__HOST": "0.0.0.0",
        "HUB_PARTNERS__INSURER__CHANNEL__ROOT": "/srv/insurer",
        "HUB_RETRY__DELAYS_SECONDS": "[1, 2]",
        "UNRELATED": "x",
    })
    assert (config.status.host, config.status.port) == ("0.0.0.0", 9001)
    assert str(config.partners["insurer"].channel.root) == "/srv/insurer"
    assert config.retry.delays_seconds == [1, 2]


@pytest.mark.parametrize(("environ", "says"), [
    ({"HUB_STATUS__PORT": "70000"}, "status.port: Input should be less than or equal to 65535"),
    ({"HUB_QUEUE__WORKERS": "0"}, "queue.workers: Input should be greater than or equal to 1"),
    ({"HUB_PARTNERS__INSURER__FORMAT": "csv"}, "partners.insurer.format"),
    ({"HUB_STORE__URLL": "x"}, "store.urll: Extra inputs are not permitted"),
])
def test_bad_values_name_the_key(environ: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError, match=says.replace(".", r"\.")):
        load_config(DEFAULT_CONFIG, environ=environ)


def test_a_route_to_an_unknown_partner_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "hub.toml"
    route = '\n[[routes]]\nmessage = "PendingPolicy"\nfrom = "insurer"\nto = "bank"\n'
    bad.write_text(DEFAULT_CONFIG.read_text() + route)
    with pytest.raises(ConfigError, match=r"routes.*'bank'"):
        load_config(bad, environ={})


def test_a_broken_schema_is_reported_in_one_line() -> None:
    transfer = REFERENCE_XSD / "海关跨境传输节点报文定义202205.xsd"
    needs(transfer.exists(), f"the reference schemas are not beside the project ({REFERENCE_XSD})")
    with pytest.raises(SchemaLoadError) as caught:
        SchemaRegistry([SchemaSource("dxp-sv", "1.0", "http://www.chinaport.gov.cn/dxp", transfer)])
    message = str(caught.value)
    assert "\n" not in message
    assert str(transfer) in message and "终端节点报文.xsd" in message


def test_schemas_command_writes_every_json_schema_and_the_xsds(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(REPO / "run_hub.py"), "schemas", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    written = sorted(p.name for p in (tmp_path / "platform").iterdir())
    assert written == sorted(f"{name}.schema.json" for name in MESSAGE_TYPES)
    assert {"ClaimApplication.schema.json", "CustomsRecordAnswer.schema.json"} <= set(written)
    schema = json.loads((tmp_path / "platform" / "PendingPolicy.schema.json").read_text())
    assert schema["properties"]["messageType"] == {"const": "PendingPolicy"}
    assert (tmp_path / "xml" / "eci" / "1.0" / "eci.xsd").exists()
    assert (tmp_path / "xml" / "cus" / "1.0" / "cus.xsd").exists()


@pytest.mark.slow
def test_demo_plays_both_endings_and_exits_0() -> None:
    done = subprocess.run([sys.executable, str(REPO / "run_hub.py"), "demo"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("✓") == 14  # 7 steps: the forwarded message and the receipt of each
    assert "demo passed" in done.stdout


def test_an_envelope_schema_is_not_a_partners_message_schema() -> None:
    from hub.app import Hub

    config = load_config(DEFAULT_CONFIG, environ={"HUB_PARTNERS__CUSTOMS__SCHEMA": "dxp/1.0"})
    with pytest.raises(ConfigError, match=r"partners\.customs\.schema: 'dxp/1\.0' is not one of the hub's message"):
        Hub(config)
