"""The schema registry: every XML schema the hub speaks, compiled once at start-up.

Validation runs on lxml's compiled schema (libxml2, fast). Only when a document fails is it run through
xmlschema as well, whose errors name the exact element path (`/ECI101Message/PendingPolicy/enterprise/uscc`)
where libxml2 only gives a line. This package imports nothing of the hub.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import xmlschema
from lxml import etree

SCHEMA_DIR = Path(__file__).parent


class SchemaLoadError(Exception):
    """A schema that cannot be compiled; the message is one line naming the file and the fault."""


@dataclass(frozen=True)
class SchemaProblem:
    path: str
    reason: str


@dataclass(frozen=True)
class SchemaSource:
    name: str  # e.g. "eci": the family of namespaces
    version: str
    namespace: str
    path: Path
    prefix: str = ""  # of the root elements: ECI101Message


_XSD = "{http://www.w3.org/2001/XMLSchema}"


def _check_locations(path: Path, seen: set[Path] | None = None) -> None:
    """Every file a schema includes or imports must exist; say which one does not (libxml2 only says that it
    "could not build an URI")."""
    seen = set() if seen is None else seen
    if path in seen:
        return
    seen.add(path)
    if not path.is_file():
        raise SchemaLoadError(f"schema {path} does not exist")
    try:
        tree = etree.parse(str(path))
    except etree.XMLSyntaxError as exc:
        raise SchemaLoadError(f"schema {path}: not well-formed XML: {exc.msg}") from exc
    for ref in tree.iter(f"{_XSD}include", f"{_XSD}import", f"{_XSD}redefine"):
        location = ref.get("schemaLocation")
        if location is None or "://" in location:
            continue
        target = (path.parent / location).resolve()
        if not target.is_file():
            kind = etree.QName(ref).localname
            raise SchemaLoadError(
                f"schema {path}: line {ref.sourceline} {kind}s {location!r}, which does not exist in {target.parent}"
            )
        _check_locations(target, seen)


class CompiledSchema:
    def __init__(self, source: SchemaSource) -> None:
        self.source = source
        _check_locations(source.path)
        try:
            self._lxml = etree.XMLSchema(etree.parse(str(source.path)))
        except (OSError, etree.XMLSchemaParseError, etree.XMLSyntaxError) as exc:
            raise SchemaLoadError(f"schema {source.path}: {_first_line(exc)}") from exc

    @cached_property
    def _detail(self) -> xmlschema.XMLSchema:
        return xmlschema.XMLSchema(str(self.source.path))

    def problems(self, root: etree._Element) -> list[SchemaProblem]:
        """Every way `root` breaks the schema, each with its element path; empty when it is valid."""
        if self._lxml.validate(root):
            return []
        found = [SchemaProblem(e.path or "", e.reason or e.message) for e in self._detail.iter_errors(root)]
        if not found:  # the two validators disagree: trust libxml2's verdict, report its words
            found = [SchemaProblem("", _first_line(str(self._lxml.error_log)))]
        return found


def _first_line(exc: BaseException | str) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


class SchemaRegistry:
    """Compiled schemas by namespace. Compiling happens in the constructor, so a broken schema stops start-up."""

    def __init__(self, sources: list[SchemaSource]) -> None:
        self._by_namespace: dict[str, CompiledSchema] = {}
        for source in sources:
            if source.namespace in self._by_namespace:  # for_namespace could not tell them apart
                first = self._by_namespace[source.namespace].source
                raise SchemaLoadError(
                    f"schemas {first.name}/{first.version} ({first.path}) and {source.name}/{source.version} "
                    f"({source.path}) share namespace {source.namespace}: the registry needs one schema per namespace"
                )
            self._by_namespace[source.namespace] = CompiledSchema(source)
        self._by_name = {f"{s.name}/{s.version}": self._by_namespace[s.namespace] for s in sources}

    def get(self, name_and_version: str) -> CompiledSchema:
        """The schema named like "eci/1.0"; KeyError names the ones there are."""
        try:
            return self._by_name[name_and_version]
        except KeyError:
            raise KeyError(f"no schema {name_and_version!r}; the hub has {', '.join(sorted(self._by_name))}") from None

    def for_namespace(self, namespace: str) -> CompiledSchema | None:
        return self._by_namespace.get(namespace)

    def namespaces(self) -> list[str]:
        return sorted(self._by_namespace)


ECI_1_0 = SchemaSource("eci", "1.0", "urn:sw-eci-hub:insurer:1.0", SCHEMA_DIR / "eci" / "1.0" / "eci.xsd", "ECI")
CUS_1_0 = SchemaSource("cus", "1.0", "urn:sw-eci-hub:customs:1.0", SCHEMA_DIR / "cus" / "1.0" / "cus.xsd", "CUS")
HUB_SCHEMAS = [ECI_1_0, CUS_1_0]

# The ecosystem's schemas, copied with their origin noted in each folder's SOURCE.md; never written by the hub,
# unlike HUB_SCHEMAS, which hub/mappers/xsd.py writes from the canonical models.
DXP_1_0 = SchemaSource("dxp", "1.0", "http://www.chinaport.gov.cn/dxp", SCHEMA_DIR / "dxp" / "dxp.xsd")
# Every schema the hub compiles at start.
ALL_SCHEMAS = [*HUB_SCHEMAS, DXP_1_0]
