"""JSON-LD checked against schema.org's own vocabulary, offline.

A JSON-LD processor (`pyld`) expands the page's JSON-LD with schema.org's published context, served
from a file instead of the network: every term becomes the full IRI schema.org defines for it, exactly as
a search engine reads it. The expanded nodes are then checked against schema.org's vocabulary (the
`schemaorg-current-http.jsonld` of release 12.0, shipped in the `schemaorg` package, read with the same
processor): every type is a schema.org class, every property a schema.org property that is not
superseded, defined for the node's type or one of its supertypes (`domainIncludes`), and every value of
a type the property accepts (`rangeIncludes`): a node of a range class or a subclass, a reference, or a
literal where the range has a data type (Text, URL, Date...), dates parsing as ISO 8601.

Release 12.0 is the newest the registry ships; every type and property the pipeline emits is in it and
unchanged since. The context's `@vocab` is `http://schema.org/` (as schema.org's live context still is),
so the `http` vocabulary of the same release is the one that matches.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from importlib.metadata import distribution
from pathlib import Path
from typing import Any

from pyld import jsonld

RELEASE = "12.0"
SCHEMA = "http://schema.org/"
RDFS = "http://www.w3.org/2000/01/rdf-schema#"
RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
# Where a document may name schema.org's context; all are served from the bundled file.
CONTEXT_URLS = {"https://schema.org", "https://schema.org/", "http://schema.org", "http://schema.org/"}
_DATES = {f"{SCHEMA}Date", f"{SCHEMA}DateTime"}


def _release_file(name: str) -> Any:
    """A JSON file of the bundled schema.org release (data files of the `schemaorg` distribution)."""
    path = Path(str(distribution("schemaorg").locate_file(f"schemaorg/data/releases/{RELEASE}/{name}")))
    return json.loads(path.read_text(encoding="utf-8"))


def document_loader(url: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """pyld's document loader: schema.org's context from the bundled release, nothing from the network."""
    if url not in CONTEXT_URLS:
        raise jsonld.JsonLdError(f"no network here: {url} is not schema.org's context", "loading document failed")
    return {"contextUrl": None, "documentUrl": url, "document": _release_file("schemaorgcontext.jsonld")}


def expand(document: Any) -> list[dict[str, Any]]:
    """`document` expanded by the JSON-LD processor with schema.org's context (full IRIs, lists of values)."""
    expanded: list[dict[str, Any]] = jsonld.expand(document, {"documentLoader": document_loader})
    return expanded


def _ids(node: dict[str, Any], key: str) -> frozenset[str]:
    return frozenset(value["@id"] for value in node.get(key, []) if "@id" in value)


@dataclass(frozen=True)
class Vocabulary:
    """schema.org's classes with their direct superclasses, and its properties with domain and range."""

    superclasses: dict[str, frozenset[str]]
    datatypes: frozenset[str]
    domains: dict[str, frozenset[str]]
    ranges: dict[str, frozenset[str]]
    superseded: frozenset[str]

    def supertypes(self, type_iri: str) -> set[str]:
        """The class and every class it is a subclass of, transitively."""
        seen, pending = set(), [type_iri]
        while pending:
            current = pending.pop()
            if current not in seen:
                seen.add(current)
                pending.extend(self.superclasses.get(current, ()))
        return seen


@cache
def vocabulary() -> Vocabulary:
    """schema.org's vocabulary from the bundled release, expanded by the same processor."""
    nodes = jsonld.expand(_release_file("schemaorg-current-http.jsonld"))
    superclasses, domains, ranges = {}, {}, {}
    datatypes, superseded = set(), set()
    for node in nodes:
        iri, types = node["@id"], set(node.get("@type", []))
        if f"{RDFS}Class" in types or f"{SCHEMA}DataType" in types:
            superclasses[iri] = _ids(node, f"{RDFS}subClassOf")
        if f"{SCHEMA}DataType" in types:
            datatypes.add(iri)
        if f"{RDF}Property" in types:
            domains[iri] = _ids(node, f"{SCHEMA}domainIncludes")
            ranges[iri] = _ids(node, f"{SCHEMA}rangeIncludes")
        if node.get(f"{SCHEMA}supersededBy"):
            superseded.add(iri)
    return Vocabulary(superclasses, frozenset(datatypes), domains, ranges, frozenset(superseded))


def _nodes(values: list[Any]) -> Iterator[dict[str, Any]]:
    """Every node object in expanded JSON-LD, nested ones included."""
    for value in values:
        if isinstance(value, dict) and "@value" not in value:
            if "@list" in value:
                yield from _nodes(value["@list"])
                continue
            yield value
            for key, nested in value.items():
                if not key.startswith("@"):
                    yield from _nodes(nested)


def problems(document: Any) -> list[str]:
    """Everything in `document` (a JSON-LD document) that schema.org's vocabulary does not allow; [] if valid."""
    vocab = vocabulary()
    found: list[str] = []
    expanded = expand(document)
    if not expanded:
        return ["the document expands to nothing"]
    for node in _nodes(expanded):
        types = node.get("@type", [])
        where = f"{node.get('@id', '(blank node)')} {[t.removeprefix(SCHEMA) for t in types]}"
        if not types and set(node) - {"@id"}:
            found.append(f"{where}: a node with properties but no @type")
        for type_iri in types:
            if type_iri not in vocab.superclasses:
                found.append(f"{where}: {type_iri} is not a schema.org type")
            elif type_iri in vocab.superseded:
                found.append(f"{where}: {type_iri} is superseded")
        supertypes = set().union(*(vocab.supertypes(t) for t in types)) if types else set()
        for key, values in node.items():
            if key.startswith("@"):
                continue
            name = key.removeprefix(SCHEMA)
            if key not in vocab.domains:
                found.append(f"{where}: {key} is not a schema.org property")
                continue
            if key in vocab.superseded:
                found.append(f"{where}: {name} is superseded")
            if not vocab.domains[key] & supertypes:
                found.append(f"{where}: {name} is not a property of these types or their supertypes")
            found += [f"{where}: {name}: {problem}" for value in values if (problem := _range_problem(key, value))]
    return found


def _range_problem(key: str, value: dict[str, Any]) -> str | None:
    vocab = vocabulary()
    accepted = vocab.ranges[key]
    names = sorted(t.removeprefix(SCHEMA) for t in accepted)
    if "@value" in value:
        if not any(vocab.supertypes(t) & vocab.datatypes for t in accepted):
            return f"literal {value['@value']!r}, but the range is {names}"
        if accepted <= _DATES | {f"{SCHEMA}Text"} and accepted & _DATES:
            try:
                (datetime if "T" in str(value["@value"]) else date).fromisoformat(str(value["@value"]))
            except ValueError:
                return f"{value['@value']!r} is not an ISO 8601 date"
        return None
    types = value.get("@type", [])
    if not types:
        return None  # a reference by @id: to a node of any type, or a URL
    if not any(vocab.supertypes(t) & accepted for t in types):
        return f"a {[t.removeprefix(SCHEMA) for t in types]} node, but the range is {names}"
    return None
