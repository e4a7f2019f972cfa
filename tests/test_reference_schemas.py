"""The schema registry against the real world: the customs publication of May 2022 (../shared/reference), its
schemas and its own sample messages, some of which break its own export schema."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree

from hub.schemas import DXP_1_0, CompiledSchema, SchemaLoadError, SchemaRegistry, SchemaSource
from tests.conftest import REPO, needs

REFERENCE = REPO.parent / "shared" / "reference" / "chinaport-ceb-202205"
REFERENCE_XSD = REFERENCE / "xsd"
REFERENCE_DXP_XSD = REFERENCE_XSD / "海关跨境终端节点报文定义202205.xsd"
CEB = "http://www.chinaport.gov.cn/ceb"
IMPORT = SchemaSource("ceb-import", "202205", CEB, REFERENCE_XSD / "海关跨境进口业务节点报文定义202205.xsd")
EXPORT = SchemaSource("ceb-export", "202205", CEB, REFERENCE_XSD / "海关跨境出口业务节点报文定义202205.xsd")


def needs_reference() -> None:
    needs(REFERENCE.is_dir(), f"the customs reference publication is not beside the project ({REFERENCE})")


def samples(kind: str) -> list[Path]:
    return sorted((REFERENCE / "samples" / kind).glob("*.xml"))


@pytest.fixture(scope="module")
def compiled() -> Iterator[dict[str, CompiledSchema]]:
    needs_reference()
    # Import and export share their namespace, so each has a registry of its own.
    yield {kind: SchemaRegistry([source]).get(f"ceb-{kind}/202205") for kind, source in
           (("import", IMPORT), ("export", EXPORT))}


def test_every_import_sample_is_valid(compiled: dict[str, CompiledSchema]) -> None:
    found = samples("import")
    assert len(found) == 16
    for path in found:
        assert compiled["import"].problems(etree.parse(str(path)).getroot()) == [], path.name


# What breaks the export schema, as the registry reports it (xmlschema: the element whose content is wrong, and
# why) and the element libxml2 points at.
EXPORT_FAULTS: dict[str, list[tuple[str, str, str]]] = {
    # The root is named CEB214 where the schema declares CEB214Message.
    "CEB214Message.xml": [("/ceb:CEB214", "'{http://www.chinaport.gov.cn/ceb}CEB214' is not an element of the schema",
                           "/ceb:CEB214")],
    # Ten business records, then BaseTransfer twice: the schema allows one.
    **{f"CEB{n}Message.xml": [(f"/ceb:CEB{n}Message", "Unexpected child with tag 'ceb:BaseTransfer' at position 12.",
                               f"/ceb:CEB{n}Message/ceb:BaseTransfer[2]")]
       for n in (303, 403, 505, 507, 509, 603, 605, 607)},
    # Each goods line says gnum where the schema names it gseqno: 10 summaries of 2 lines.
    "CEB792Message.xml": [
        (line, "Unexpected child with tag 'ceb:gnum' at position 3. Tag 'ceb:gseqno' expected.", f"{line}/ceb:gnum")
        for line in (f"/ceb:CEB792Message/ceb:SummaryResult[{s}]/ceb:SummaryResultList[{g}]"
                     for s in range(1, 11) for g in (1, 2))
    ],
}


def test_export_samples_that_break_their_schema_are_reported_with_the_exact_element(
    compiled: dict[str, CompiledSchema],
) -> None:
    libxml2 = etree.XMLSchema(etree.parse(str(EXPORT.path)))
    valid, faults = [], {}
    for path in samples("export"):
        root = etree.parse(str(path)).getroot()
        problems = compiled["export"].problems(root)
        if not problems:
            valid.append(path.name)
            continue
        libxml2.validate(root)
        assert [e.path for e in libxml2.error_log] == [element for _, _, element in EXPORT_FAULTS[path.name]]
        faults[path.name] = [(p.path, p.reason, element) for p, (_, _, element) in
                             zip(problems, EXPORT_FAULTS[path.name], strict=True)]
    assert faults == EXPORT_FAULTS
    assert len(valid) == 13  # as the reference's README says: 13 of the 23
    assert len(valid) + len(faults) == 23


def test_one_namespace_two_schemas_is_refused_in_one_line() -> None:
    needs_reference()
    with pytest.raises(SchemaLoadError) as caught:
        SchemaRegistry([IMPORT, EXPORT])
    message = str(caught.value)
    assert "\n" not in message
    assert "ceb-import/202205" in message and "ceb-export/202205" in message and CEB in message


def test_the_hubs_dxp_schema_is_the_publications_but_for_where_it_finds_xmldsig() -> None:
    needs_reference()
    ours = DXP_1_0.path.read_text(encoding="utf-8").splitlines()
    theirs = REFERENCE_DXP_XSD.read_text(encoding="utf-8").splitlines()
    changed = [(a, b) for a, b in zip(theirs, ours, strict=True) if a != b]
    assert changed == [(
        '\t<xs:import namespace="http://www.w3.org/2000/09/xmldsig#" schemaLocation="xmldsig-core-schema.xsd"/>',
        '\t<xs:import namespace="http://www.w3.org/2000/09/xmldsig#" '
        'schemaLocation="../xmldsig/xmldsig-core-schema.xsd"/>',
    )]
    assert (REFERENCE_XSD / "xmldsig-core-schema.xsd").read_bytes() == (
        DXP_1_0.path.parent.parent / "xmldsig" / "xmldsig-core-schema.xsd").read_bytes()
