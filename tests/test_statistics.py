"""Authorised-data statistics (授权数据查询统计): the counts the platform receives are the ones this test derives
from the customs answers it sent itself; only authorizations in force count, only the kinds and days they
cover; each period is sent once, and a run after missed ones compiles each missed period."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Collection
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from sqlalchemy import func, select

from hub.app import Hub
from hub.config import ConfigError, load_config
from hub.errors import HubError
from hub.mappers.platform_json import PlatformJson, platform_json_schemas
from hub.models import CanonicalMessage
from hub.models.base import BEIJING
from hub.models.customs import CustomsRecordAnswer
from hub.models.statistics import AuthorizedDataStatistics
from hub.scheduler.statistics import compile_authorised_data_statistics
from hub.store import messages
from tests.conftest import FIXTURES, Exchange

# Invented enterprises (valid check characters): the fixtures' own, and one from the signing fixtures.
QIHANG = ("义乌市启航小商品贸易有限公司", "91330782MA2H7K3R9J", "MA2H7K3R9")  # the customs fixtures' enterprise
XINGCHEN = ("义乌市星辰进出口有限公司", "91330782MA2J8L4T12", "MA2J8L4T1")  # the authorization fixtures'
XINGHE = ("义乌市星河小商品贸易有限公司", "91330782MA2K7QXLX8", "MA2K7QXLX")
SCHEMA = jsonschema.Draft202012Validator(platform_json_schemas()["AuthorizedDataStatistics"])


def as_enterprise(message: CanonicalMessage, was: tuple[str, str, str], becomes: tuple[str, str, str],
                  **changes: Any) -> Any:
    """The same message about another enterprise (every mention of it: party, sender, record owners)."""
    text = message.model_dump_json(by_alias=True)
    for old, new in zip(was, becomes, strict=True):
        text = text.replace(old, new)
    data = {**json.loads(text), **changes, "messageId": str(uuid.uuid4()).upper()}
    return type(message).model_validate(data)


class Parties:
    def __init__(self, hub: Hub, exchange: Exchange) -> None:
        self.hub, self.exchange = hub, exchange

    def send(self, sender: str, message: CanonicalMessage) -> None:
        fmt = self.hub.pipeline.formats[sender]
        name = f"{message.message_type}_{message.message_id}{fmt.file_suffix}"
        self.exchange.drop(sender, name, fmt.encode(message))
        receipt = self.exchange.receipt_for(sender, message.message_id)
        assert receipt["returnStatus"] == 120, receipt

    def fixture(self, partner: str, path: str) -> Any:
        return self.hub.pipeline.formats[partner].decode((FIXTURES / path).read_bytes())

    def authorize(self, who: tuple[str, str, str], number: str, kinds: list[str], valid_to: date,
                  in_force: bool = True, valid_from: date | None = None) -> None:
        valid_from = valid_from or datetime.now(BEIJING).date() - timedelta(days=10)
        request = self.fixture("platform", "authorization/valid/platform-data-authorization.json")
        self.send("platform", as_enterprise(request, XINGCHEN, who, authorizationNo=number, dataKinds=kinds,
                                            validFrom=str(valid_from), validTo=str(valid_to)))
        if in_force:
            result = self.fixture("insurer", "authorization/valid/insurer-data-authorization-result.xml")
            self.send("insurer", as_enterprise(result, XINGCHEN, who, authorizationNo=number))

    def customs_answer(self, who: tuple[str, str, str], query_no: str, documents: int) -> CustomsRecordAnswer:
        """A query and customs' answer about the enterprise's documents (the fixture's first `documents`)."""
        query = self.fixture("platform", "customs/valid/platform-customs-record-query.json")
        self.send("platform", as_enterprise(query, QIHANG, who, queryNo=query_no))
        answer = self.fixture("customs", "customs/valid/customs-customs-record-answer.xml")
        answer = as_enterprise(answer, QIHANG, who, queryNo=query_no)
        answer = answer.model_copy(update={"answers": answer.answers[:documents]})
        self.send("customs", answer)
        self.exchange.wait_files("platform", "out", 1, f"CustomsRecordAnswer_{answer.message_id}.json")
        return answer


def expected_counts(answers: list[CustomsRecordAnswer], kinds: dict[str, list[str]]) -> dict[str, dict[str, int]]:
    """From what was sent: per authorised enterprise, its found documents by each kind it authorised."""
    expected = {uscc: dict.fromkeys(wanted, 0) for uscc, wanted in kinds.items()}
    for answer in answers:
        found = Counter(a.kind.value for a in answer.answers if a.result.value == "found")
        for kind, n in found.items():
            if kind in expected.get(answer.enterprise.uscc, {}):
                expected[answer.enterprise.uscc][kind] += n
    return expected


def statistics_sent(exchange: Exchange, before: Collection[str] = ()) -> list[dict[str, Any]]:
    found = []
    for path in exchange.files("platform", "out", "AuthorizedDataStatistics_*.json"):
        if path.name not in before:
            document = json.loads(path.read_bytes())
            SCHEMA.validate(document)
            found.append(document)
    return found


def delivered(hub: Hub, exchange: Exchange) -> None:
    """Wait until every statistics message the store holds for the platform is in its folder."""
    exchange.wait_files("platform", "out", stored_statistics(hub), "AuthorizedDataStatistics_*.json")


def counts_of(sent: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    return {s["enterprise"]["uscc"]: {c["dataKind"]: c["count"] for c in s["counts"]} for s in sent}


def stored_statistics(hub: Hub) -> int:
    with hub.store.read() as conn:
        return int(conn.execute(select(func.count()).where(
            messages.c.message_type == "AuthorizedDataStatistics")).scalar_one())


def midnight_after(day: date, days: int = 1) -> datetime:
    return datetime.combine(day + timedelta(days=days), time(0, 5), BEIJING)


def test_counts_by_day_month_and_year_are_those_derived_from_the_answers_sent(
    backend_hub: Hub, exchange: Exchange
) -> None:
    hub = backend_hub
    parties = Parties(hub, exchange)
    today = datetime.now(BEIJING).date()
    kinds = {QIHANG[1]: ["declaration", "certificate-of-origin"],
             XINGCHEN[1]: ["declaration", "bill-of-lading", "certificate-of-origin"]}
    parties.authorize(QIHANG, "SQ2026330100041", kinds[QIHANG[1]], today + timedelta(days=1))
    parties.authorize(XINGCHEN, "SQ2026330100042", kinds[XINGCHEN[1]], today + timedelta(days=2))
    parties.authorize(XINGHE, "SQ2026330100043", ["declaration"], today + timedelta(days=30), in_force=False)
    answers = [
        parties.customs_answer(QIHANG, "CX-SP2026330100041-01", 5),
        parties.customs_answer(QIHANG, "CX-SP2026330100041-02", 1),
        parties.customs_answer(XINGCHEN, "CX-SP2026330100042-01", 5),
        parties.customs_answer(XINGHE, "CX-SP2026330100043-01", 5),  # requested, never in force: not counted
    ]
    expected = expected_counts(answers, kinds)
    assert expected[QIHANG[1]] == {"declaration": 2, "certificate-of-origin": 1}  # the fixture says so too

    said = compile_authorised_data_statistics(hub, midnight_after(today), period="day")
    assert f"1 period(s) {today}..{today} compiled, 2 message(s) sent" in said
    sent = exchange.wait_files("platform", "out", 2, "AuthorizedDataStatistics_*.json")
    daily = statistics_sent(exchange)
    assert counts_of(daily) == expected
    assert {(s["frequency"], s["period"]) for s in daily} == {("day", str(today))}
    assert {s["enterprise"]["uscc"]: s["authorizationNos"] for s in daily} == {
        QIHANG[1]: ["SQ2026330100041"], XINGCHEN[1]: ["SQ2026330100042"]}

    again = compile_authorised_data_statistics(hub, midnight_after(today), period="day")
    assert "nothing to do" in again
    assert stored_statistics(hub) == 2

    first_of_next_month = (today.replace(day=28) + timedelta(days=4)).replace(day=1)
    compile_authorised_data_statistics(hub, midnight_after(first_of_next_month, 0), period="month")
    compile_authorised_data_statistics(hub, midnight_after(date(today.year + 1, 1, 1), 0), period="year")
    exchange.wait_files("platform", "out", 6, "AuthorizedDataStatistics_*.json")
    by_period: dict[str, list[dict[str, Any]]] = {}
    for s in statistics_sent(exchange, {p.name for p in sent}):
        by_period.setdefault(f"{s['frequency']} {s['period']}", []).append(s)
    assert set(by_period) == {f"month {today:%Y-%m}", f"year {today:%Y}"}
    assert all(counts_of(found) == expected for found in by_period.values())


def test_missed_days_are_compiled_once_each_and_only_while_an_authorization_is_valid(
    hub: Hub, exchange: Exchange
) -> None:
    parties = Parties(hub, exchange)
    today = datetime.now(BEIJING).date()
    parties.authorize(QIHANG, "SQ2026330100051", ["declaration"], today + timedelta(days=1))
    parties.authorize(XINGCHEN, "SQ2026330100052", ["declaration", "bill-of-lading"], today + timedelta(days=2))
    tomorrow = today + timedelta(days=1)
    parties.authorize(XINGHE, "SQ2026330100053", ["declaration"], today + timedelta(days=30), valid_from=tomorrow)
    answer = parties.customs_answer(QIHANG, "CX-SP2026330100051-01", 5)
    parties.customs_answer(XINGHE, "CX-SP2026330100053-01", 5)  # used the day before its authorization begins
    compile_authorised_data_statistics(hub, midnight_after(today), period="day")
    first = {p.name for p in exchange.wait_files("platform", "out", 2, "AuthorizedDataStatistics_*.json")}
    daily = counts_of(statistics_sent(exchange))
    assert daily[QIHANG[1]] == expected_counts([answer], {QIHANG[1]: ["declaration"]})[QIHANG[1]]
    assert XINGHE[1] not in daily
    compile_authorised_data_statistics(hub, midnight_after(date(today.year + 1, 1, 1), 0), period="year")
    delivered(hub, exchange)
    yearly = counts_of([s for s in statistics_sent(exchange, first) if s["frequency"] == "year"])
    assert yearly.get(XINGHE[1], {"declaration": 0}) == {"declaration": 0}  # absent when tomorrow is next year
    first |= {p.name for p in exchange.files("platform", "out", "AuthorizedDataStatistics_*.json")}

    # The job did not run for three days: the next run compiles each of them, in order.
    said = compile_authorised_data_statistics(hub, midnight_after(today, 4), period="day")
    assert f"3 period(s) {tomorrow}..{today + timedelta(days=3)} compiled, 6 message(s)" in said
    delivered(hub, exchange)
    # XINGHE's authorization begins tomorrow: its days count, at zero.
    later = sorted((s["period"], s["enterprise"]["uscc"], tuple((c["dataKind"], c["count"]) for c in s["counts"]))
                   for s in statistics_sent(exchange, first))
    none, both = (("declaration", 0),), (("declaration", 0), ("bill-of-lading", 0))
    assert later == sorted([
        (str(tomorrow), QIHANG[1], none), (str(tomorrow), XINGCHEN[1], both), (str(tomorrow), XINGHE[1], none),
        (str(today + timedelta(days=2)), XINGCHEN[1], both), (str(today + timedelta(days=2)), XINGHE[1], none),
        (str(today + timedelta(days=3)), XINGHE[1], none),
    ])
    assert "nothing to do" in compile_authorised_data_statistics(hub, midnight_after(today, 4), period="day")


def test_a_period_still_settling_is_not_compiled_and_no_route_sends_nothing(hub: Hub, exchange: Exchange) -> None:
    today = datetime.now(BEIJING).date()
    Parties(hub, exchange).authorize(QIHANG, "SQ2026330100061", ["declaration"], today + timedelta(days=5))
    just_after_midnight = datetime.combine(today + timedelta(days=1), time(0, 0, 20), BEIJING)
    said = compile_authorised_data_statistics(hub, just_after_midnight, period="day")
    assert f"{today - timedelta(days=1)}..{today - timedelta(days=1)} compiled" in said  # not today: settling

    routes = hub.pipeline.routes
    hub.pipeline.routes = {k: v for k, v in routes.items() if k[0] != "AuthorizedDataStatistics"}
    with pytest.raises(HubError, match="NO_ROUTE"):
        compile_authorised_data_statistics(hub, midnight_after(today), period="day")
    hub.pipeline.routes = routes
    said = compile_authorised_data_statistics(hub, midnight_after(today), period="day")
    assert f"1 period(s) {today}..{today} compiled, 1 message(s) sent" in said  # the failed run left no mark
    assert stored_statistics(hub) == 2


def test_the_statistics_fixture_is_a_valid_platform_message() -> None:
    path = FIXTURES / "statistics" / "hub-authorized-data-statistics-month.json"
    document = json.loads(path.read_bytes())
    SCHEMA.validate(document)
    message = PlatformJson().decode(path.read_bytes())
    assert isinstance(message, AuthorizedDataStatistics)
    assert message.business_key() == f"{message.enterprise.uscc}:{message.period}"
    with pytest.raises(HubError, match="YYYY-MM"):
        PlatformJson().decode(path.read_bytes().replace(b'"period": "2026-10"', b'"period": "2026-10-01"'))


@pytest.mark.parametrize(("partners", "route", "said"), [
    ("hub", ("PendingPolicy", "platform", "platform"), "partners.hub: the name is the hub's own"),
    ("platform", ("AuthorizedDataStatistics", "platform", "hub"), "routes[0] names partner 'hub'"),
])
def test_hub_is_a_senders_name_for_routes_and_nothing_else(
    tmp_path: Path, partners: str, route: tuple[str, str, str], said: str
) -> None:
    message, sender, receiver = route
    config = tmp_path / "hub.toml"
    config.write_text(
        f'[partners.{partners}]\nformat = "platform-json"\nchannel = {{ kind = "folder", root = "x" }}\n'
        f'[[routes]]\nmessage = "{message}"\nfrom = "{sender}"\nto = "{receiver}"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        load_config(config, environ={})
    assert said in str(refused.value)
