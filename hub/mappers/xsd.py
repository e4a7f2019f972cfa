"""The hub's XML schemas, written from the canonical models.

The XML mapper names every element after a model field, so the schema is a function of the models: writing
it from them keeps the two from drifting apart. The files are committed under hub/schemas/ (partners get
them from `python run_hub.py schemas DIR`); a test fails when a model change would alter a committed schema,
which is the moment to decide on a new version. Regenerate with `python -m hub.mappers.xsd`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lxml import etree

from hub.models import MESSAGE_TYPES, CanonicalMessage, Receipt
from hub.schemas import HUB_SCHEMAS, SchemaSource

XS = "http://www.w3.org/2001/XMLSchema"
DS = "http://www.w3.org/2000/09/xmldsig#"
HEAD_FIELDS = ("messageId", "createdAt", "appType", "sender")
_XSD_PATH_TO_DSIG = "../../xmldsig/xmldsig-core-schema.xsd"


def messages_of(schema_name: str) -> list[type[CanonicalMessage]]:
    """The request messages a schema carries, by number."""
    return sorted((m for m in MESSAGE_TYPES.values() if m.schema_name == schema_name), key=lambda m: m.xml_code)


class _Writer:
    def __init__(self, source: SchemaSource) -> None:
        self.source = source
        self.root = etree.Element(
            f"{{{XS}}}schema",
            nsmap={"xs": XS, "hub": source.namespace, "ds": DS},
            attrib={"targetNamespace": source.namespace, "elementFormDefault": "qualified",
                    "attributeFormDefault": "unqualified", "version": source.version},
        )
        self.types: dict[str, etree._Element] = {}  # named types written so far, by name

    def xs(self, parent: etree._Element, tag: str, **attrib: str) -> etree._Element:
        return etree.SubElement(parent, f"{{{XS}}}{tag}", {k.rstrip("_"): v for k, v in attrib.items()})

    def document(self, messages: list[type[CanonicalMessage]]) -> str:
        self.xs(self.root, "import", namespace=DS, schemaLocation=_XSD_PATH_TO_DSIG)
        self._head_and_message_types()
        for message in messages:
            self._root_element(f"{self.source.prefix}{message.xml_code}Message", message)
        for code in [m.xml_code + 1 for m in messages] + [Receipt.xml_code]:
            self._root_element(f"{self.source.prefix}{code}Message", Receipt)
        for name in sorted(self.types):
            self.root.append(self.types[name])
        header = etree.Comment(
            f" The hub's {self.source.name} schema, version {self.source.version} ({self.source.namespace}). "
            "Written from the canonical models by hub/mappers/xsd.py: do not edit by hand. "
        )
        text = etree.tostring(self.root, pretty_print=True, encoding="unicode")
        return f'<?xml version="1.0" encoding="UTF-8"?>\n<!--{header.text}-->\n{text}'

    def _head_and_message_types(self) -> None:
        """The customs conventions every message shares: Head, then the body, Sender, an enveloped signature."""
        head = etree.Element(f"{{{XS}}}complexType", name="HeadType")
        seq = self.xs(head, "sequence")
        self.xs(seq, "element", name="guid", type="hub:Guid")
        self._enumerated(self.xs(seq, "element", name="appType"), ["1", "2", "3"], "1 new, 2 change, 3 delete")
        time = self.xs(self.xs(seq, "element", name="appTime"), "simpleType")
        self.xs(self.xs(time, "restriction", base="xs:string"), "pattern", value="[0-9]{14}")
        self._enumerated(self.xs(seq, "element", name="appStatus"), ["1", "2"], "1 draft, 2 declared (signed)")
        self.types["HeadType"] = head

        guid = etree.Element(f"{{{XS}}}simpleType", name="Guid")
        self.xs(self.xs(guid, "restriction", base="xs:string"), "pattern",
                value="[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}")
        self.types["Guid"] = guid

        message = etree.Element(f"{{{XS}}}complexType", name="MessageType", abstract="true")
        self.xs(self.xs(message, "sequence"), "element", name="Head", type="hub:HeadType")
        self.xs(message, "attribute", name="guid", type="hub:Guid", use="required")
        self.xs(message, "attribute", name="version", type="xs:string", use="required", fixed=self.source.version)
        self.types["MessageType"] = message

    def _root_element(self, name: str, message: type[CanonicalMessage]) -> None:
        schema = message.model_json_schema(by_alias=True)
        body_type = self._complex_type(message.message_type, schema, schema.get("$defs", {}), skip=HEAD_FIELDS)
        sender = schema["$defs"]["Sender"]
        self._complex_type("Sender", sender, schema["$defs"])
        element = self.xs(self.root, "element", name=name)
        ext = self.xs(self.xs(self.xs(element, "complexType"), "complexContent"), "extension", base="hub:MessageType")
        seq = self.xs(ext, "sequence")
        self.xs(seq, "element", name=message.message_type, type=f"hub:{body_type}")
        self.xs(seq, "element", name="Sender", type="hub:SenderType")
        self.xs(seq, "element", ref="ds:Signature", minOccurs="0")

    def _complex_type(self, title: str, schema: dict[str, Any], defs: dict[str, Any],
                      skip: tuple[str, ...] = ()) -> str:
        name = f"{title}Type"
        written = etree.Element(f"{{{XS}}}complexType", name=name)
        if schema.get("description"):
            self._document(written, schema["description"])
        seq = self.xs(written, "sequence")
        required = set(schema.get("required", []))
        for field, prop in schema["properties"].items():
            if field not in skip:
                self._field(seq, field, prop, field in required, defs)
        self._keep(name, written)
        return name

    def _keep(self, name: str, written: etree._Element) -> None:
        earlier = self.types.get(name)
        if earlier is not None and etree.tostring(earlier) != etree.tostring(written):
            raise ValueError(f"two different models are both called {name[:-4]}: rename one")
        self.types[name] = written

    def _field(self, seq: etree._Element, field: str, prop: dict[str, Any], required: bool,
               defs: dict[str, Any]) -> None:
        prop, nullable = _without_null(prop)
        element = self.xs(seq, "element", name=field)
        if not required or nullable:
            element.set("minOccurs", "0")
        if prop.get("description"):
            self._document(element, prop["description"])
        if prop.get("type") == "array":
            element.set("minOccurs", str(prop.get("minItems", 0)))
            element.set("maxOccurs", str(prop["maxItems"]) if "maxItems" in prop else "unbounded")
            prop = prop["items"]
        self._type_of(element, prop, defs)

    def _type_of(self, element: etree._Element, prop: dict[str, Any], defs: dict[str, Any]) -> None:
        if "$ref" in prop:
            title = prop["$ref"].rsplit("/", 1)[-1]
            target = defs[title]
            if "enum" in target:
                element.set("type", f"hub:{self._enum_type(title, target)}")
            else:
                element.set("type", f"hub:{self._complex_type(title, target, defs)}")
            return
        simple = _simple(prop)
        if simple is None:
            raise ValueError(f"no XML Schema type for {prop}")
        base, facets = simple
        if not facets:
            element.set("type", base)
            return
        restriction = self.xs(self.xs(element, "simpleType"), "restriction", base=base)
        for facet, value in facets:
            self.xs(restriction, facet, value=value)

    def _enum_type(self, title: str, target: dict[str, Any]) -> str:
        name = f"{title}Type"
        written = etree.Element(f"{{{XS}}}simpleType", name=name)
        base = "xs:integer" if target.get("type") == "integer" else "xs:string"
        restriction = self.xs(written, "restriction", base=base)
        for value in target["enum"]:
            self.xs(restriction, "enumeration", value=str(value))
        self._keep(name, written)
        return name

    def _enumerated(self, element: etree._Element, values: list[str], doc: str) -> None:
        self._document(element, doc)
        restriction = self.xs(self.xs(element, "simpleType"), "restriction", base="xs:string")
        for value in values:
            self.xs(restriction, "enumeration", value=value)

    def _document(self, parent: etree._Element, text: str) -> None:
        self.xs(self.xs(parent, "annotation"), "documentation").text = " ".join(text.split())


def _without_null(prop: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    options = prop.get("anyOf")
    if options and {"type": "null"} in options:
        rest = [o for o in options if o != {"type": "null"}]
        merged = {**(rest[0] if len(rest) == 1 else {"anyOf": rest})}
        if "description" in prop:
            merged["description"] = prop["description"]
        return merged, True
    return prop, False


def _simple(prop: dict[str, Any]) -> tuple[str, list[tuple[str, str]]] | None:
    """An XML Schema base type and its facets for a JSON Schema scalar."""
    options = prop.get("anyOf")
    if options and any(o.get("type") == "number" for o in options):  # pydantic's Decimal
        number = next(o for o in options if o.get("type") == "number")
        facets = _bounds({**number, **prop})
        for key, facet in (("x-total-digits", "totalDigits"), ("x-fraction-digits", "fractionDigits")):
            if key in prop:
                facets.append((facet, str(prop[key])))
        return "xs:decimal", facets
    kind = prop.get("type")
    if kind == "boolean":
        return "xs:boolean", []
    if kind == "integer":
        return "xs:integer", _bounds(prop)
    if kind != "string":
        return None
    fmt = prop.get("format")
    if fmt in ("date", "date-time", "base64"):
        return {"date": "xs:date", "date-time": "xs:dateTime", "base64": "xs:base64Binary"}[fmt], []
    facets = []
    if "const" in prop or "enum" in prop:
        facets += [("enumeration", str(v)) for v in prop.get("enum", [prop.get("const")])]
    if "pattern" in prop:
        facets.append(("pattern", prop["pattern"].removeprefix("^").removesuffix("$")))
    facets += [(facet, str(prop[key])) for key, facet in (("minLength", "minLength"), ("maxLength", "maxLength"))
               if key in prop]
    return "xs:string", facets


def _bounds(prop: dict[str, Any]) -> list[tuple[str, str]]:
    names = (("minimum", "minInclusive"), ("maximum", "maxInclusive"),
             ("exclusiveMinimum", "minExclusive"), ("exclusiveMaximum", "maxExclusive"))
    return [(facet, _number(prop[key])) for key, facet in names if key in prop]


def _number(value: float | int) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def schema_text(source: SchemaSource) -> str:
    return _Writer(source).document(messages_of(source.name))


def write_all() -> list[Path]:
    written = []
    for source in HUB_SCHEMAS:
        source.path.parent.mkdir(parents=True, exist_ok=True)
        source.path.write_text(schema_text(source), encoding="utf-8")
        written.append(source.path)
    return written


if __name__ == "__main__":
    for path in write_all():
        print(f"wrote {path}")
