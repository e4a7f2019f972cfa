"""Conversation rules: which message may come when, per business key (DOMAIN.md §1-8).

The rules are data: each step names the states the conversation must be in and the state it moves to
(a state, or a function of the message when the message decides, e.g. the insurer's outcome).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hub.errors import OUT_OF_ORDER, UNKNOWN_REFERENCE, ErrorCode
from hub.models import CanonicalMessage
from hub.models.risk import ArticleAction, RiskArticle


@dataclass(frozen=True)
class Step:
    requires: frozenset[str | None]  # None: no conversation yet (the step opens one)
    becomes: str | Callable[[CanonicalMessage], str]
    repeat_in: frozenset[str] = frozenset()  # states in which the message is a repeat: answered, not forwarded
    what: str = ""  # how operators and partners call what this message must answer
    refusal: str = ""  # what to say instead of the generic sentence when the state does not fit


@dataclass(frozen=True)
class Verdict:
    becomes: str
    repeat: bool  # acknowledge again, do not forward
    opens: bool = False  # the message starts its conversation (none was known under its key)


@dataclass(frozen=True)
class Refusal:
    error: ErrorCode
    reason: str


def _field(name: str) -> Callable[[CanonicalMessage], str]:
    """The new state is the message's own outcome or status."""
    return lambda message: str(getattr(message, name).value)


NEW = frozenset({None})

STEPS: dict[str, Step] = dict([
    # 小微投保: 待确认 → 已提交 → 已退回 | 生效待收悉 → 已收悉
    ("PendingPolicy", Step(frozenset({None, "awaiting-confirmation"}), "awaiting-confirmation")),
    ("InsuranceApplication", Step(frozenset({"awaiting-confirmation"}), "applied", what="a pending policy")),
    ("ApplicationReturned", Step(frozenset({"applied"}), "returned", what="a submitted application")),
    ("PolicyIssued", Step(frozenset({"applied"}), "awaiting-receipt", what="a submitted application")),
    ("PolicyReceipt", Step(frozenset({"awaiting-receipt"}), "receipted", repeat_in=frozenset({"receipted"}),
                           what="an issued policy")),
    # 签约: 保险公司签约中 → 签约成功 → 解约中 → 解约成功 | back to 签约成功
    ("AgreementSignRequest", Step(frozenset({None, "terminated"}), "insurer-signing")),
    ("AgreementSealed", Step(frozenset({"insurer-signing"}), "signed", what="an agreement the enterprise signed")),
    ("AgreementTerminateRequest", Step(frozenset({"signed"}), "terminating", what="a signed agreement")),
    # 解约失败 leaves the agreement signed.
    ("AgreementTerminateResult", Step(frozenset({"terminating"}), lambda m: "terminated"
                                      if _field("outcome")(m) == "terminated" else "signed",
                                      what="a termination request")),
    # 数据授权: one in force per enterprise and insurer
    ("DataAuthorization", Step(frozenset({None, "refused"}), "requested",
                               refusal="请勿重复授权 (do not authorise twice): this enterprise's authorization "
                                       "for this insurer is already {state}")),
    ("DataAuthorizationResult", Step(frozenset({"requested"}), _field("outcome"), what="an authorization request")),
    # 询保: 已提交 → 已完成
    ("InsuranceInquiry", Step(NEW, "submitted")),
    ("InquiryCompleted", Step(frozenset({"submitted"}), "completed", what="a submitted inquiry")),
    # 索赔: submitted (again after a return) → the insurer's review status
    ("ClaimApplication", Step(frozenset({None, "returned"}), "submitted")),
    ("ClaimReviewReceipt", Step(frozenset({"submitted", "accepted", "under-review"}), _field("status"),
                                what="a submitted claim")),
    # 申报数据检查
    ("CustomsRecordQuery", Step(NEW, "queried")),
    ("CustomsRecordAnswer", Step(frozenset({"queried"}), "answered", what="a customs record query")),
    # 订单登记
    ("TradeRegistration", Step(NEW, "submitted")),
    ("TradeRegistrationResult", Step(frozenset({"submitted"}), _field("outcome"), what="a submitted registration")),
])

# 风险资讯: what an article may do depends on its action.
ARTICLE_STEPS: dict[ArticleAction, Step] = {
    ArticleAction.NEW: Step(NEW, "published"),
    ArticleAction.UPDATE: Step(frozenset({"published"}), "published", what="a published article"),
    ArticleAction.WITHDRAW: Step(frozenset({"published"}), "withdrawn", what="a published article"),
}


def step_for(message: CanonicalMessage) -> Step:
    if isinstance(message, RiskArticle):
        return ARTICLE_STEPS[message.action]
    return STEPS[message.message_type]


def judge(message: CanonicalMessage, current: str | None) -> Verdict | Refusal:
    """The step's verdict, or why the message does not fit the conversation."""
    step = step_for(message)
    if current in step.repeat_in:
        return Verdict(current or "", repeat=True)
    if current in step.requires:
        becomes = step.becomes if isinstance(step.becomes, str) else step.becomes(message)
        return Verdict(becomes, repeat=False, opens=current is None)
    if current is None:
        return Refusal(UNKNOWN_REFERENCE, f"answers {step.what} that the hub does not know")
    if step.refusal:
        return Refusal(OUT_OF_ORDER, step.refusal.format(state=current))
    allowed = ", ".join(sorted(s or "new" for s in step.requires))
    return Refusal(OUT_OF_ORDER, f"the conversation is {current!r}; a {message.message_type} fits only when it is "
                                 f"{allowed}")
