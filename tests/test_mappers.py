"""Mappers are pure: canonical → XML or JSON → canonical is the identity, and emitted XML is schema-valid for an
independent validator too."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from hub.errors import HubError
from hub.mappers.hub_xml import HubXml
from hub.mappers.platform_json import PlatformJson, platform_json_schemas
from hub.mappers.xsd import schema_text
from hub.models import MESSAGE_TYPES, CanonicalMessage
from hub.schemas import HUB_SCHEMAS, SchemaRegistry
from tests.conftest import FIXTURES, UNDERWRITING, needs
from tests.strategies import ALL_MESSAGES, messages_of

REGISTRY = SchemaRegistry(HUB_SCHEMAS)
XML = HubXml(REGISTRY.get("eci/1.0"))
XML_BY_SCHEMA = {source.name: HubXml(REGISTRY.get(f"{source.name}/{source.version}")) for source in HUB_SCHEMAS}


def xml_for(message: CanonicalMessage) -> HubXml:
    """The schema that carries the message (receipts are in every schema: take the insurer's)."""
    return XML_BY_SCHEMA.get(message.schema_name, XML)
JSON = PlatformJson()
JSON_VALIDATORS = {name: jsonschema.Draft202012Validator(s) for name, s in platform_json_schemas().items()}
ROUND_TRIPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@ROUND_TRIPS
@given(ALL_MESSAGES)
def test_xml_round_trip_is_identity(message: CanonicalMessage) -> None:
    xml = xml_for(message)
    assert xml.decode(xml.encode(message)) == message


@ROUND_TRIPS
@given(ALL_MESSAGES)
def test_platform_json_round_trip_is_identity(message: CanonicalMessage) -> None:
    assert JSON.decode(JSON.encode(message)) == message


def _as_lxml_writes_it(raw: bytes) -> bytes:
    return etree.tostring(etree.fromstring(raw), xml_declaration=True, encoding="UTF-8", pretty_print=True)


@ROUND_TRIPS
@given(ALL_MESSAGES)
def test_emitted_xml_is_byte_for_byte_what_lxml_writes_for_it(message: CanonicalMessage) -> None:
    raw = xml_for(message).encode(message)
    assert _as_lxml_writes_it(raw) == raw


def test_texts_with_line_breaks_tabs_and_markup_reach_the_insurer_unchanged() -> None:
    document = json.loads((FIXTURES / "claims" / "valid" / "platform-claim-application.json").read_bytes())
    document["mitigation"] = 'stopped shipping\r\n\tcalled the buyer & agent <twice> ]]> "urgent" \'x\''
    document["buyer"]["listed"]["englishName"] = "BRIGHTWAY\rTOYS\tTRADING\nLLC & <CO>"
    message = JSON.decode(json.dumps(document).encode())
    raw = XML.encode(message)
    assert b"stopped shipping&#13;\n\tcalled the buyer &amp; agent &lt;twice&gt; ]]&gt;" in raw
    assert _as_lxml_writes_it(raw) == raw
    assert XML.decode(raw) == message
    assert JSON.encode(message) == _as_json_dumps_writes_it(message)
    assert JSON.decode(JSON.encode(message)) == message


def _as_json_dumps_writes_it(message: CanonicalMessage) -> bytes:
    body = message.model_dump(mode="json", by_alias=True, exclude_none=True)
    return json.dumps({"messageType": message.message_type, **body}, ensure_ascii=False, indent=2).encode()


@ROUND_TRIPS
@given(ALL_MESSAGES)
def test_emitted_json_is_byte_for_byte_what_json_dumps_writes(message: CanonicalMessage) -> None:
    assert JSON.encode(message) == _as_json_dumps_writes_it(message)


def test_every_valid_fixture_decodes_and_re_encodes_to_the_same_bytes() -> None:
    for path in sorted((UNDERWRITING / "valid").iterdir()):
        fmt = XML if path.suffix == ".xml" else JSON
        raw = path.read_bytes()
        assert fmt.encode(fmt.decode(raw)).strip() == raw.strip(), path.name


def test_an_app_time_that_is_no_real_time_is_refused_naming_the_field() -> None:
    raw = (UNDERWRITING / "valid" / "insurer-pending-policy-new.xml").read_bytes()
    for app_time, reason in (("20261131090000", "day is out of range for month"), ("20261122250000", "unconverted")):
        bad = re.sub(rb"<appTime>[0-9]{14}</appTime>", f"<appTime>{app_time}</appTime>".encode(), raw)
        with pytest.raises(HubError) as caught:
            XML.decode(bad)
        assert (caught.value.code, caught.value.field) == ("FIELD_INVALID", "/ECI101Message/Head/appTime")
        assert reason in str(caught.value)


def test_json_schemas_cover_every_message_type_and_carry_identifier_patterns() -> None:
    schemas = platform_json_schemas()
    assert set(schemas) == set(MESSAGE_TYPES)
    application = schemas["InsuranceApplication"]
    assert application["properties"]["messageType"] == {"const": "InsuranceApplication"}
    assert application["$defs"]["Enterprise"]["properties"]["uscc"]["pattern"] == "^[0-9A-HJ-NP-RTUW-Y]{18}$"


@ROUND_TRIPS
@given(ALL_MESSAGES)
def test_emitted_json_validates_against_its_generated_schema(message: CanonicalMessage) -> None:
    JSON_VALIDATORS[message.message_type].validate(json.loads(JSON.encode(message)))


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                                   HealthCheck.function_scoped_fixture])
@given(st.tuples(*(messages_of(model) for model in MESSAGE_TYPES.values())))
def test_emitted_xml_validates_with_xmllint(tmp_path: Path, one_of_each: tuple[CanonicalMessage, ...]) -> None:
    needs(shutil.which("xmllint") is not None, "xmllint (Debian libxml2-utils) is not installed")
    written: dict[str, list[str]] = {source.name: [] for source in HUB_SCHEMAS}
    for message in one_of_each:
        path = tmp_path / f"{message.message_type}.xml"
        path.write_bytes(xml_for(message).encode(message))
        written[message.schema_name if message.schema_name != "*" else "eci"].append(str(path))
    for path in FIXTURES.rglob("valid/*.xml"):
        written[etree.QName(etree.parse(str(path)).getroot()).localname[:3].lower()].append(str(path))
    for source in HUB_SCHEMAS:
        done = subprocess.run(["xmllint", "--noout", "--schema", str(source.path), *written[source.name]],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert done.stderr.count(" validates") == len(written[source.name])


def test_committed_schemas_are_what_the_models_write() -> None:
    for source in HUB_SCHEMAS:
        assert source.path.read_text(encoding="utf-8") == schema_text(source), (
            f"{source.path} differs from what the models write: if partners may see this change, give it a new "
            "version; then run `python -m hub.mappers.xsd`"
        )
