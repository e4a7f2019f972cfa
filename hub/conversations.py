"""Conversation rules: which message may come when, per business key (DOMAIN.md §3).

pending policy → application → returned | issued → policy receipt. The rules are data: each step names the
states the conversation must be in and the state it moves to.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    requires: frozenset[str | None]  # None: no conversation yet (the step opens one)
    becomes: str
    repeat_in: frozenset[str] = frozenset()  # states in which the message is a repeat: answered, not forwarded
    what: str = ""  # how operators and partners call what this message must answer


AWAITING_CONFIRMATION = "awaiting-confirmation"  # 待确认
APPLIED = "applied"  # 已提交
RETURNED = "returned"  # 已退回
AWAITING_RECEIPT = "awaiting-receipt"  # 生效, 待收悉
RECEIPTED = "receipted"  # 已收悉

STEPS: dict[str, Step] = {
    "PendingPolicy": Step(frozenset({None, AWAITING_CONFIRMATION}), AWAITING_CONFIRMATION),
    "InsuranceApplication": Step(frozenset({AWAITING_CONFIRMATION}), APPLIED, what="a pending policy"),
    "ApplicationReturned": Step(frozenset({APPLIED}), RETURNED, what="a submitted application"),
    "PolicyIssued": Step(frozenset({APPLIED}), AWAITING_RECEIPT, what="a submitted application"),
    "PolicyReceipt": Step(
        frozenset({AWAITING_RECEIPT}), RECEIPTED, repeat_in=frozenset({RECEIPTED}), what="an issued policy"
    ),
}


@dataclass(frozen=True)
class Verdict:
    becomes: str
    repeat: bool  # acknowledge again, do not forward


def judge(message_type: str, current: str | None) -> Verdict | str:
    """The step's verdict, or a sentence saying why the message does not fit the conversation."""
    step = STEPS[message_type]
    if current in step.repeat_in:
        return Verdict(current or step.becomes, repeat=True)
    if current in step.requires:
        return Verdict(step.becomes, repeat=False)
    if current is None:
        return f"answers {step.what} that the hub does not know"
    allowed = ", ".join(sorted(s or "new" for s in step.requires))
    return f"the conversation is {current!r}; a {message_type} fits only when it is {allowed}"
