"""Fetch stage (harvest): evaluates keywords' compiled arXiv queries against harvested papers.

Fields ti abs au co jr cat rn all, "phrases", AND / OR / ANDNOT and parentheses, with arXiv's
reading: AND and ANDNOT bind tighter than OR, two terms side by side mean AND. Words are
compared as case-folded word tokens (arXiv may also stem: see the README). `cat:cs.CV`
matches cross-lists too, `cat:cs` (no subject) the whole archive, `cat:cs.*` likewise.

Each keyword is indexed by its rarest required tokens in the batch, so a page of papers is
tested only against keywords that can match it, not every keyword against every paper.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from storage.records import Paper

_TOKEN = re.compile(
    r'\s*(?:(\()|(\))|([A-Za-z]+):"([^"]*)"|"([^"]*)"|([A-Za-z]+):([^\s()"]+)|([^\s()"]+))')
_FIELDS = frozenset({"ti", "au", "abs", "co", "jr", "cat", "rn", "all"})
_WORD = re.compile(r"\w+")
_CAT = "\x00cat:"  # index keys of categories and archives never collide with words
_ARCHIVE = "\x00archive:"


@dataclass(frozen=True, slots=True)
class Term:
    field: str
    words: tuple[str, ...]  # case-folded word tokens; for cat: (category or archive,)
    archive: bool = False

    @property
    def needle(self) -> str:
        return " " + " ".join(self.words) + " "


@dataclass(frozen=True, slots=True)
class Op:
    kind: str  # "AND", "OR", "ANDNOT"
    left: Node
    right: Node


Node = Term | Op | None  # None: a term that can match nothing (empty, or rn:)


class QueryError(ValueError):
    """A query the matcher cannot read (never from a keyword that passed parse_keyword)."""


def compile_query(query: str) -> Node:
    tokens = _tokenize(query)
    parser = _Parser(tokens)
    node = parser.parse_or()
    if parser.pos != len(tokens):
        raise QueryError(f"unexpected {tokens[parser.pos]!r} in {query!r}")
    return node


def _tokenize(query: str) -> list[tuple[str, object]]:
    tokens: list[tuple[str, object]] = []
    pos = 0
    while pos < len(query) and (match := _TOKEN.match(query, pos)) and match.end() > pos:
        pos = match.end()
        lpar, rpar, f1, phrase1, phrase2, f2, word2, bare = match.groups()
        if lpar or rpar:
            tokens.append((lpar or rpar, None))
        elif bare in ("AND", "OR", "ANDNOT"):
            tokens.append(("op", bare))
        elif f1 is not None:
            tokens.append(("term", _term(f1.lower(), phrase1)))
        elif phrase2 is not None:
            tokens.append(("term", _term("all", phrase2)))
        elif f2 is not None and f2.lower() in _FIELDS:
            tokens.append(("term", _term(f2.lower(), word2)))
        else:
            tokens.append(("term", _term("all", match.group(0).strip())))
    if query[pos:].strip():
        raise QueryError(f"cannot read {query[pos:][:40]!r}")
    return tokens


def _term(field: str, text: str) -> Term | None:
    if field == "cat":
        wanted = text.strip().casefold()
        if wanted.endswith(".*"):
            wanted = wanted[:-2]
        return Term("cat", (wanted,), archive="." not in wanted) if wanted else None
    words = tuple(_WORD.findall(text.casefold()))
    return Term(field, words) if words and field != "rn" else None


class _Parser:
    def __init__(self, tokens: list[tuple[str, object]]) -> None:
        self.tokens, self.pos = tokens, 0

    def _peek(self) -> tuple[str, object] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def parse_or(self) -> Node:
        node = self.parse_and()
        while self._peek() == ("op", "OR"):
            self.pos += 1
            node = Op("OR", node, self.parse_and())
        return node

    def parse_and(self) -> Node:
        node = self.parse_atom()
        while (token := self._peek()) is not None and token[0] != ")" and token != ("op", "OR"):
            kind = "AND"
            if token[0] == "op":
                kind = str(token[1])
                self.pos += 1
            node = Op(kind, node, self.parse_atom())
        return node

    def parse_atom(self) -> Node:
        token = self._peek()
        if token is None:
            raise QueryError("a term is missing")
        self.pos += 1
        if token[0] == "(":
            node = self.parse_or()
            if self._peek() == (")", None):
                self.pos += 1
            return node
        if token[0] == "term":
            return token[1]  # type: ignore[return-value]
        raise QueryError(f"unexpected {token!r}")


class Document:
    """One paper as the matcher reads it: each field's word tokens as " a b c " strings."""

    __slots__ = ("categories", "fields", "keys", "paper")

    def __init__(self, paper: Paper) -> None:
        self.paper = paper
        parts = {"ti": paper.title, "abs": paper.abstract, "au": " ".join(paper.authors),
                 "co": paper.comment, "jr": paper.journal_ref}
        joined = " ".join([*parts.values(), "", *paper.categories])  # as arXiv's "all"
        self.fields = {name: _spaced(text) for name, text in parts.items()}
        self.fields["all"] = _spaced(joined)
        self.categories = {c.casefold() for c in paper.categories}
        archives = {c.split(".", 1)[0] for c in self.categories}
        self.keys = (set(self.fields["all"].split()) | {_CAT + c for c in self.categories}
                     | {_ARCHIVE + a for a in archives})
        self.categories |= {_ARCHIVE + a for a in archives}


def _spaced(text: str) -> str:
    return " " + " ".join(_WORD.findall(text.casefold())) + " "


Test = Callable[[Document], bool]


def compile_test(node: Node) -> Test:
    """The query as nested closures: each paper is then tested without walking the tree
    and dispatching on node kinds (30,000 keywords × their candidate papers, per page)."""
    if node is None:
        return lambda doc: False
    if isinstance(node, Term):
        if node.field == "cat":
            key = _ARCHIVE + node.words[0] if node.archive else node.words[0]
            return lambda doc: key in doc.categories
        needle, field = node.needle, node.field
        return lambda doc: needle in doc.fields[field]
    left, right = compile_test(node.left), compile_test(node.right)
    if node.kind == "OR":
        return lambda doc: left(doc) or right(doc)
    if node.kind == "ANDNOT":
        return lambda doc: left(doc) and not right(doc)
    return lambda doc: left(doc) and right(doc)


def _triggers(node: Node, df: dict[str, int]) -> frozenset[str]:
    """Index keys of which every matching paper holds at least one: the rarest choice."""
    if node is None:
        return frozenset()
    if isinstance(node, Term):
        if node.field == "cat":
            return frozenset({(_ARCHIVE if node.archive else _CAT) + node.words[0]})
        return frozenset({min(node.words, key=lambda w: df.get(w, 0))})
    left = _triggers(node.left, df)
    if node.kind == "ANDNOT":
        return left
    right = _triggers(node.right, df)
    if node.kind == "OR":
        return left | right
    return min(left, right, key=lambda keys: sum(df.get(k, 0) for k in keys))


class Matcher:
    """Every keyword's compiled query, ready to be tested against batches of papers."""

    def __init__(self, keywords: Iterable[tuple[int, str]]) -> None:
        self.queries: dict[int, Node] = {}
        self.tests: dict[int, Test] = {}
        self.unreadable: dict[int, str] = {}
        for keyword_id, query in keywords:
            try:
                self.queries[keyword_id] = compile_query(query)
            except QueryError as exc:
                self.unreadable[keyword_id] = str(exc)
            else:
                self.tests[keyword_id] = compile_test(self.queries[keyword_id])

    def match(self, papers: Sequence[Paper]) -> dict[int, list[Paper]]:
        """keyword id → its matching papers (in the batch's order); keywords with none left out."""
        docs = [Document(p) for p in papers]
        postings: dict[str, list[int]] = {}
        for index, doc in enumerate(docs):
            for key in doc.keys:
                postings.setdefault(key, []).append(index)
        df = {key: len(found) for key, found in postings.items()}
        found: dict[int, list[Paper]] = {}
        for keyword_id, node in self.queries.items():
            candidates: set[int] = set()
            for key in _triggers(node, df):
                candidates.update(postings.get(key, ()))
            test = self.tests[keyword_id]
            hits = [docs[i].paper for i in sorted(candidates) if test(docs[i])]
            if hits:
                found[keyword_id] = hits
        return found
