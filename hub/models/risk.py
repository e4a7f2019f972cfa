"""风险资讯: risk information pushed by the insurer (DOMAIN.md §7); articles are new, updated or withdrawn."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field

from hub.codelists import Country
from hub.models.base import CanonicalMessage, required_when
from hub.models.parties import Attachment


class RiskCategory(StrEnum):
    COUNTRY_WARNING = "country-warning"  # 国别信息预警
    INDUSTRY_WARNING = "industry-warning"  # 重点行业风险预警
    BELT_AND_ROAD = "belt-and-road"  # 一带一路专报
    TRADE_NEWS = "trade-news"  # 国际贸易和投资要闻


class ArticleAction(StrEnum):
    NEW = "new"
    UPDATE = "update"
    WITHDRAW = "withdraw"


class RiskArticle(CanonicalMessage):
    message_type = "RiskArticle"
    family = "risk"
    xml_code = 601
    key_field = "article_id"

    article_id: Annotated[str, Field(pattern=r"^[A-Z0-9-]{4,40}$")]
    action: ArticleAction
    category: RiskCategory
    title: Annotated[str, Field(min_length=1, max_length=200)]
    countries: tuple[Country, ...] = ()
    industries: tuple[Annotated[str, Field(min_length=1, max_length=50)], ...] = ()
    published_at: datetime
    # A withdrawal needs no body; new and updated articles do.
    body: Annotated[str, Field(min_length=1, max_length=200_000)] | None = Field(default=None, validate_default=True)
    attachments: tuple[Attachment, ...] = ()

    _body_unless_withdrawn = required_when(
        "body", "action", (ArticleAction.NEW, ArticleAction.UPDATE), "a new or updated article needs its body"
    )


MESSAGES = (RiskArticle,)
