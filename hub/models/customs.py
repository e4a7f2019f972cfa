"""Customs records for the shipment data check (申报数据检查, DOMAIN.md §5–6): declarations (报关单), bills of
lading (提运单) and certificates of origin (原产地证), queried per claim and answered per document.

They travel in the hub's customs schema (urn:sw-eci-hub:customs:1.0). Declaration fields keep the public
customs names (DecHead / DecList, EntryId, TrafMode, BillNo, CodeTS, GName, …) so that people who know
customs data read them at once.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic.alias_generators import to_pascal

from hub.codelists import Country, Currency, TransportMode, Unit
from hub.models.base import (
    USCC,
    CanonicalMessage,
    DeclarationNo,
    HsCode,
    Money,
    Record,
    Text,
)
from hub.models.parties import Enterprise

CustomsCode = Annotated[str, Field(pattern=r"^[0-9]{4}$")]  # 关区代码
BillNo = Annotated[str, Field(pattern=r"^[0-9A-Z-]{4,32}$")]
CertificateNo = Annotated[str, Field(pattern=r"^[0-9A-Z]{6,30}$")]
Quantity = Annotated[Decimal, Field(gt=0, max_digits=19, decimal_places=5)]


class CustomsRecord(Record):
    """Customs data keeps the public PascalCase names (EntryId, TrafMode, …)."""

    model_config = ConfigDict(
        alias_generator=to_pascal, populate_by_name=True, extra="forbid", frozen=True, str_strip_whitespace=True
    )


class DecList(CustomsRecord):
    """One goods item of a declaration."""

    g_no: Annotated[int, Field(ge=1, le=999)]  # 序号
    code_ts: HsCode = Field(alias="CodeTS")  # 海关商品编号
    g_name: Text  # 商品名称
    g_model: Annotated[str, Field(min_length=1, max_length=255)]  # 规格型号
    g_qty: Quantity  # 成交数量
    g_unit: Unit  # 成交单位
    decl_price: Quantity  # 单价
    decl_total: Money  # 总价
    trade_curr: Currency  # 币制
    first_qty: Quantity  # 法定第一数量
    first_unit: Unit  # 法定第一计量单位
    origin_country: Country  # 原产国


class DecHead(CustomsRecord):
    entry_id: DeclarationNo  # 海关编号
    ie_port: CustomsCode = Field(alias="IEPort")  # 出境关别
    ie_date: date = Field(alias="IEDate")  # 出口日期
    custom_master: CustomsCode  # 申报地海关
    trade_code: USCC  # 境内收发货人
    trade_name: Text
    traf_mode: TransportMode  # 运输方式
    traf_name: Text  # 运输工具名称
    voyage_no: Annotated[str, Field(min_length=1, max_length=32)]  # 航次号
    bill_no: BillNo  # 提运单号
    distinate_port: Annotated[str, Field(pattern=r"^[A-Z0-9]{3,6}$")]  # 指运港 (the public spelling)
    agent_name: Text  # 申报单位
    trade_country: Country  # 贸易国
    overseas_consignee_ename: Text  # 境外收发货人
    trans_mode: Annotated[str, Field(pattern=r"^[1-7]$")]  # 成交方式 (1 CIF, 2 C&F, 3 FOB, …)
    contr_no: Annotated[str, Field(min_length=1, max_length=32)]  # 合同协议号
    pack_no: Annotated[int, Field(ge=1)]  # 件数
    gross_wet: Quantity  # 毛重 (kg)
    container_count: Annotated[int, Field(ge=0)] = 0


class Declaration(CustomsRecord):
    dec_head: DecHead
    dec_list: Annotated[tuple[DecList, ...], Field(min_length=1)]


class BillOfLading(CustomsRecord):
    """From the manifest (舱单)."""

    bill_no: BillNo
    house_bill_no: BillNo | None = None
    traf_name: Text
    voyage_no: Annotated[str, Field(min_length=1, max_length=32)]
    shipper: Text
    consignee: Text
    shipper_code: USCC
    ship_date: date


class CertificateOfOrigin(CustomsRecord):
    certificate_no: CertificateNo
    exporter_name: Text
    exporter_code: USCC
    goods_description: Annotated[str, Field(min_length=1, max_length=1000)]
    issue_date: date


class DocumentKind(StrEnum):
    DECLARATION = "declaration"
    BILL_OF_LADING = "bill-of-lading"
    CERTIFICATE_OF_ORIGIN = "certificate-of-origin"


class RecordResult(StrEnum):
    FOUND = "found"  # 数据正常: found and the enterprise's own
    NOT_FOUND = "not-found"  # 未查询到符合条件的数据
    NOT_OWNED = "not-owned"  # exists, but the enterprise is not its consignor/consignee (also shown as 未查询到)


class RequestedDocument(Record):
    kind: DocumentKind
    number: Annotated[str, Field(pattern=r"^[0-9A-Z-]{4,32}$")]


class CustomsMessage(CanonicalMessage):
    family = "customs"
    schema_name = "cus"
    key_field = "query_no"

    query_no: Annotated[str, Field(pattern=r"^[A-Z0-9-]{6,40}$")]
    enterprise: Enterprise


class CustomsRecordQuery(CustomsMessage):
    """Which documents a claim's shipments name, to be looked up for the enterprise."""

    message_type = "CustomsRecordQuery"
    xml_code = 101

    documents: Annotated[tuple[RequestedDocument, ...], Field(min_length=1, max_length=300)]


class DocumentAnswer(Record):
    """One document's answer; the record itself only when it was found and is the enterprise's."""

    kind: DocumentKind
    number: Annotated[str, Field(pattern=r"^[0-9A-Z-]{4,32}$")]
    result: RecordResult
    declaration: Declaration | None = None
    bill_of_lading: BillOfLading | None = None
    certificate_of_origin: CertificateOfOrigin | None = None

    _RECORD_OF: ClassVar[dict[DocumentKind, str]] = {
        DocumentKind.DECLARATION: "declaration",
        DocumentKind.BILL_OF_LADING: "bill_of_lading",
        DocumentKind.CERTIFICATE_OF_ORIGIN: "certificate_of_origin",
    }

    @model_validator(mode="after")
    def _record_when_found(self) -> DocumentAnswer:
        present = [name for name in self._RECORD_OF.values() if getattr(self, name) is not None]
        expected = [self._RECORD_OF[self.kind]] if self.result is RecordResult.FOUND else []
        if present != expected:
            raise ValueError(
                f"a {self.result.value} {self.kind.value} carries "
                + (f"exactly its {self.kind.value} record" if expected else "no record")
            )
        return self

    def record_number(self) -> str | None:
        if self.declaration:
            return self.declaration.dec_head.entry_id
        if self.bill_of_lading:
            return self.bill_of_lading.bill_no
        return self.certificate_of_origin.certificate_no if self.certificate_of_origin else None

    def record_owner(self) -> str | None:
        if self.declaration:
            return self.declaration.dec_head.trade_code
        if self.bill_of_lading:
            return self.bill_of_lading.shipper_code
        return self.certificate_of_origin.exporter_code if self.certificate_of_origin else None


class CustomsRecordAnswer(CustomsMessage):
    message_type = "CustomsRecordAnswer"
    xml_code = 103

    answers: Annotated[tuple[DocumentAnswer, ...], Field(min_length=1, max_length=300)]

    @field_validator("answers")
    @classmethod
    def _found_records_match(cls, answers: tuple[DocumentAnswer, ...], info: ValidationInfo) -> object:
        enterprise = info.data.get("enterprise")
        for n, answer in enumerate(answers, 1):
            number = answer.record_number()
            if number is not None and number != answer.number:
                raise ValueError(f"answer {n} is for {answer.number} but carries the record of {number}")
            owner = answer.record_owner()
            if enterprise is not None and owner is not None and owner != enterprise.uscc:
                raise ValueError(
                    f"answer {n} is 'found' (the enterprise's own) but its record belongs to {owner}, "
                    f"not {enterprise.uscc}: that is 'not-owned'"
                )
        return answers


MESSAGES = (CustomsRecordQuery, CustomsRecordAnswer)
