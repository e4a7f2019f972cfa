from __future__ import annotations

import time
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.identifiers import (
    USCC_CHARSET,
    org_code_check_char,
    time_ordered_id,
    validate_landline,
    validate_message_id,
    validate_mobile,
    validate_org_code,
    validate_platform_email,
    validate_uscc,
)
from tests.strategies import org_codes, usccs


def test_known_values_from_the_standards() -> None:
    assert validate_uscc("9144030071526726XG") == "9144030071526726XG"
    assert org_code_check_char("MA5TNFGY") == "9"
    assert validate_org_code("MA5TNFGY9") == "MA5TNFGY9"


@given(usccs(), st.integers(0, 17), st.sampled_from(USCC_CHARSET))
def test_any_single_character_change_breaks_a_uscc(uscc: str, position: int, replacement: str) -> None:
    assert validate_uscc(uscc) == uscc
    changed = uscc[:position] + replacement + uscc[position + 1:]
    if changed != uscc:
        with pytest.raises(ValueError):
            validate_uscc(changed)


@given(org_codes())
def test_generated_org_codes_validate(code: str) -> None:
    assert validate_org_code(code) == code


@pytest.mark.parametrize(
    "bad", ["9144030071526726XI", "9144030071526726X", "9144030071526726XGG", "914403007152672OXG"]
)
def test_uscc_shape_errors_say_what_a_uscc_is(bad: str) -> None:
    with pytest.raises(ValueError, match=r"18 characters|check character|organisation code"):
        validate_uscc(bad)


@pytest.mark.parametrize("good", ["linxiaofeng@qihang-trade.example", "a.b@c.cn", "ZHANG3@mail.example.com"])
def test_platform_emails_accepted(good: str) -> None:
    assert validate_platform_email(good) == good


@pytest.mark.parametrize("bad", ["lin_xf@x.cn", "lin-xf@x.cn", "lin+xf@x.cn", "@x.cn", "lin@", "lin@x", "lin..x@x.cn"])
def test_platform_emails_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="no underscore, hyphen"):
        validate_platform_email(bad)


def test_mobile_landline_and_message_id() -> None:
    assert validate_mobile("13705791234")
    assert validate_landline("0579-85551234") and validate_landline("01085551234")
    assert validate_message_id("6F1C2A4E-3B7D-4E21-9A55-0C8E7D1B2A01")
    for check, bad in [(validate_mobile, "12705791234"), (validate_landline, "85551234"),
                       (validate_message_id, "6f1c2a4e-3b7d-4e21-9a55-0c8e7d1b2a01")]:
        with pytest.raises(ValueError):
            check(bad)


def test_new_ids_are_message_ids_that_sort_in_the_order_they_were_made() -> None:
    made = []
    for _ in range(3):
        made.append(time_ordered_id())
        time.sleep(0.002)  # the order is by millisecond; within one, the random part decides
    assert made == sorted(made)
    many = {time_ordered_id() for _ in range(10_000)}
    assert len(many) == 10_000
    for each in made:
        assert validate_message_id(each) == each
        assert uuid.UUID(each).version == 7
