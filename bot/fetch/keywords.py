"""Keywords as people type them → identity (canonical form) and the arXiv search_query.

Sits before fetch: every keyword from config.toml, /subscribe or the CLI passes through here.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

MIN_CHARS = 2
MAX_CHARS = 200
FIELDS = ("ti", "au", "abs", "co", "jr", "cat", "rn", "all")
OPERATORS = ("AND", "OR", "ANDNOT")
# Archives whose subject classes arXiv writes in lower case (physics.optics, cond-mat.mes-hall).
LOWER_SUBJECT_ARCHIVES = frozenset({"physics", "cond-mat"})

# Curly and angle quotes as phones and word processors type them, and their ASCII forms.
TYPOGRAPHIC_QUOTES = str.maketrans({c: '"' for c in "“”„‟«»″"} | {c: "'" for c in "‘’‚‛"})
_DASHES = str.maketrans({c: "-" for c in "‐‑‒–—―−"})
_SPACES = re.compile(r"\s+")
_FIELD = re.compile(rf"(?:{'|'.join(FIELDS)}):", re.IGNORECASE)
# A field prefix at a word start, in text that has no quotes (a folded phrase).
_FIELD_AT_WORD_START = re.compile(rf"(?<![^\s()]){_FIELD.pattern}", re.IGNORECASE)
_TERM_END = re.compile(r'[\s()"]')
_PLAIN_WORD = re.compile(r"\w+")
_NEEDS_QUOTES = re.compile(r'[\s():"]')
# -word or -"a phrase" after a space: left out. A minus before a digit (-40) stays in the phrase.
_EXCLUSION = re.compile(r'(?<!\S)-(?:"([^"]*)"|([^\W\d][^\s"]*))')
_BARE_EXCLUSION = re.compile(r'[^\W\d][^\s"]*')
NO_NOT = ("arXiv has no NOT. To leave a word out, put a minus before it: video anomaly "
          "detection -surveillance; in arXiv syntax write ANDNOT: ti:video ANDNOT ti:survey.")
_CONTROL_NAMES = {"\n": "a line break", "\r": "a carriage return", "\x00": "a NUL character"}


class KeywordError(ValueError):
    """A keyword we refuse; `message` is one short sentence to show the user as is."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ParsedKeyword:
    display: str  # as typed: trimmed, spaces collapsed, typographic quotes straightened
    canonical: str  # identity: the same canonical form is the same keyword
    query: str  # the search_query sent to arXiv, compiled from `canonical`
    is_syntax: bool


def parse_keyword(text: str) -> ParsedKeyword:
    """Check a keyword and compile it; raises KeywordError (and nothing else) when refused."""
    if not isinstance(text, str):
        raise KeywordError("A keyword must be text.")
    stripped = text.strip()
    if not stripped:
        raise KeywordError("The keyword is empty: write a few words, e.g. video anomaly detection.")
    _check_length(len(stripped))  # before any other work: a 10,000-character line stops here
    _check_characters(stripped)
    display = _collapse(straight_quotes(stripped))
    normal = _collapse(_straighten(unicodedata.normalize("NFKC", _straighten(stripped))))
    tokens = _tokenize(normal)
    syntax = _looks_like_syntax(tokens)
    if any(isinstance(t, _Word) and (t.text.upper() if syntax else t.text) == "NOT"
           for t in tokens):  # inside syntax operators are read in any case
        raise KeywordError(NO_NOT)
    if syntax:
        canonical = _emit(_simplify(_Parser(tokens).parse()), top=True)
        _check_expanded(len(canonical))
        return ParsedKeyword(display, canonical, canonical, is_syntax=True)
    positive, excluded = _exclusions(normal)
    phrase, canonical = _phrase(positive)
    query = _phrase_query(phrase)
    if excluded:
        canonical = " ".join([canonical, *(_excluded_form(x) for x in excluded)])
        query = " ANDNOT ".join([f"({query})", *(f"({_phrase_query(x)})" for x in excluded)])
    _check_expanded(len(canonical))
    return ParsedKeyword(display, canonical, query, is_syntax=False)


def _phrase_query(phrase: str) -> str:
    return f'ti:"{phrase}" OR abs:"{phrase}"'


def _check_expanded(n: int) -> None:
    """Ligatures and prefixes can make the written-out form longer than what was typed."""
    if n > MAX_CHARS:
        raise KeywordError(f"A keyword needs {MIN_CHARS} to {MAX_CHARS} characters once written "
                           f"out in full (ligatures and prefixes expand); yours has {n}.")


# --- checks and normalisation ---------------------------------------------------------------


def _check_length(n: int) -> None:
    if not MIN_CHARS <= n <= MAX_CHARS:
        raise KeywordError(f"A keyword needs {MIN_CHARS} to {MAX_CHARS} characters; yours has {n}.")


def _check_characters(text: str) -> None:
    """Refuse invisible and control characters, naming the first one (tabs count as spaces)."""
    for ch in text:
        kind = unicodedata.category(ch)
        if ch == "\t" or kind not in ("Cc", "Cf", "Cs"):
            continue
        code = f"U+{ord(ch):04X}"
        if kind == "Cc":
            what = _CONTROL_NAMES.get(ch, "a control character")
        elif kind == "Cs":
            what = "a broken (unpaired surrogate) character"
        else:
            what = f"the invisible character {unicodedata.name(ch, 'format character')}"
        raise KeywordError(f"A keyword cannot contain {what} ({code}); please remove it.")


def _collapse(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def straight_quotes(text: str) -> str:
    """Typographic quotes as the ASCII quotes the keyword syntax reads."""
    return text.translate(TYPOGRAPHIC_QUOTES)


def _straighten(text: str) -> str:
    return straight_quotes(text).translate(_DASHES)


def _fold(text: str) -> str:
    """Phrase identity: NFKC, case-folded, ASCII quotes and dashes, single spaces."""
    return _collapse(_straighten(unicodedata.normalize("NFKC", text.casefold())))


def _phrase(normal: str) -> tuple[str, str]:
    """A plain phrase: (the text put between quotes in the query, its canonical form)."""
    if normal.count('"') == 2 and normal.startswith('"') and normal.endswith('"'):
        normal = normal[1:-1]  # people wrap a whole phrase in quotes; that is the phrase
    if '"' in normal:
        raise KeywordError(
            "A phrase cannot contain double quotes: remove them, quote the whole phrase, "
            'or use arXiv syntax such as ti:"exact words".'
        )
    phrase = _fold(normal)
    if len(phrase) < MIN_CHARS:
        _check_length(len(phrase))
    _check_parentheses(phrase)
    # A phrase that reads as syntax keeps its quotes, so it never shares syntax's identity.
    canonical = f'"{phrase}"' if _FIELD_AT_WORD_START.search(phrase) else phrase
    return phrase, canonical


def _exclusions(normal: str) -> tuple[str, list[str]]:
    """`video anomaly detection -surveillance -"crowd counting"` → the phrase and what it must
    not contain, folded, without repeats, in a fixed order (they do not make a new keyword)."""
    excluded = []
    for m in _EXCLUSION.finditer(normal):
        text = _fold(m.group(1) if m.group(1) is not None else m.group(2))
        if not text:
            raise KeywordError('Empty quotes "" are not a search term; remove them.')
        _check_parentheses(text)
        excluded.append(text)
    positive = _collapse(_EXCLUSION.sub(" ", normal))
    if excluded and not positive:
        raise KeywordError("Write what to look for before what to leave out, e.g. "
                           "video anomaly detection -surveillance.")
    return positive, sorted(set(excluded))


def _excluded_form(text: str) -> str:
    """-word, or -"a phrase" when it would not read back as one excluded word."""
    return f"-{text}" if _BARE_EXCLUSION.fullmatch(text) else f'-"{text}"'


def _check_parentheses(text: str) -> None:
    depth = 0
    for ch in text:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            raise _unmatched_close()
    if depth:
        raise _unclosed_open()


def _unmatched_close() -> KeywordError:
    return KeywordError("The parentheses are unbalanced: a ) has no matching (.")


def _unclosed_open() -> KeywordError:
    return KeywordError("The parentheses are unbalanced: a ( is never closed.")


# --- syntax: tokens ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Term:
    field: str | None  # lower-case prefix, None for a bare term
    text: str
    quoted: bool


@dataclass(frozen=True)
class _Word:
    """A bare word that may be an operator: upper-case always, any case inside syntax."""

    text: str


_Token = _Term | _Word | str  # str: "(" or ")"


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == " ":
            i += 1
        elif ch in "()":
            tokens.append(ch)
            i += 1
        elif ch == '"':
            phrase, i = _read_quoted(text, i)
            tokens.append(_Term(None, phrase, quoted=True))
        else:
            token, i = _read_term(text, i)
            tokens.append(token)
    return tokens


def _read_quoted(text: str, start: int) -> tuple[str, int]:
    end = text.find('"', start + 1)
    if end < 0:
        raise KeywordError('The double quotes are unbalanced: every opening " needs a closing one.')
    return text[start + 1 : end], end + 1


def _read_term(text: str, i: int) -> tuple[_Term | _Word, int]:
    prefix = _FIELD.match(text, i)
    if prefix is None:
        end = _term_end(text, i)
        return _Word(text[i:end]), end
    field = prefix.group()[:-1].lower()
    i = prefix.end()
    nxt = text[i : i + 1]
    if nxt == '"':
        phrase, i = _read_quoted(text, i)
        return _Term(field, phrase, quoted=True), i
    if nxt == "(":
        raise KeywordError(
            f"Write ({field}:a OR {field}:b) instead of {field}:(a b): "
            "arXiv does not accept a field before parentheses."
        )
    if nxt in ("", " ", ")"):
        raise KeywordError(f"{field}: needs a term right after it, e.g. {field}:video.")
    end = _term_end(text, i)
    return _Term(field, text[i:end], quoted=False), end


def _term_end(text: str, i: int) -> int:
    found = _TERM_END.search(text, i)
    return found.start() if found else len(text)


def _looks_like_syntax(tokens: list[_Token]) -> bool:
    return any(
        (isinstance(t, _Term) and t.field is not None)
        or (isinstance(t, _Word) and t.text in OPERATORS)
        for t in tokens
    )


# --- syntax: tree ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Group:
    """Operands and operators in the order typed: [operand, op, operand, op, operand, …].

    Kept flat because arXiv's precedence between AND, OR and ANDNOT is not documented: the
    canonical form keeps the user's order and only drops parentheses that cannot matter.
    """

    items: tuple[_Term | _Group | str, ...]

    @property
    def operators(self) -> set[str]:
        return {item for item in self.items[1::2] if isinstance(item, str)}


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.pos = 0

    def parse(self) -> _Group:
        return self._sequence(inside=False)

    def _sequence(self, inside: bool) -> _Group:
        items: list[_Term | _Group | str] = []
        while self.pos < len(self.tokens):
            token = self.tokens[self.pos]
            self.pos += 1
            if token == ")":
                if not inside:
                    raise _unmatched_close()
                return self._close(items)
            operator = _as_operator(token)
            if operator:
                self._operator(items, operator)
            else:
                operand = self._sequence(inside=True) if isinstance(token, str) else _as_term(token)
                if items and not isinstance(items[-1], str):
                    items.append("AND")  # adjacent terms: arXiv reads them as AND
                items.append(operand)
        if inside:
            raise _unclosed_open()
        return self._close(items)

    @staticmethod
    def _operator(items: list[_Term | _Group | str], operator: str) -> None:
        if items and isinstance(items[-1], str):
            raise KeywordError(
                f"Two operators in a row ({items[-1]} {operator}): put a term between them."
            )
        if not items:
            raise _missing_operand(operator)
        items.append(operator)

    @staticmethod
    def _close(items: list[_Term | _Group | str]) -> _Group:
        if items and isinstance(items[-1], str):
            raise _missing_operand(items[-1])
        if not items:
            raise KeywordError("Empty parentheses () are not a search term; remove them.")
        return _Group(tuple(items))


def _as_operator(token: _Token) -> str | None:
    if isinstance(token, _Word) and token.text.upper() in OPERATORS:
        return token.text.upper()
    return None


def _as_term(token: _Term | _Word) -> _Term:
    return token if isinstance(token, _Term) else _Term(None, token.text, quoted=False)


def _missing_operand(operator: str) -> KeywordError:
    return KeywordError(
        f"{operator} needs a term on each side "
        f"(write {operator.lower()} in lower case to search for the word)."
    )


def _simplify(group: _Group) -> _Term | _Group:
    """Drop parentheses that cannot matter: around one term, doubled, around a whole
    expression (see _emit), and around an AND inside an AND or an OR inside an OR."""
    items = tuple(_simplify(i) if isinstance(i, _Group) else i for i in group.items)
    if len(items) == 1 and not isinstance(items[0], str):
        return items[0]
    ops = {i for i in items[1::2] if isinstance(i, str)}
    if len(ops) == 1 and ops <= {"AND", "OR"}:
        flat: list[_Term | _Group | str] = []
        for item in items:
            if isinstance(item, _Group) and item.operators == ops:
                flat.extend(item.items)
            else:
                flat.append(item)
        items = tuple(flat)
    return _Group(items)


# --- syntax: canonical text --------------------------------------------------------------------


def _emit(node: _Term | _Group | str, top: bool = False) -> str:
    if isinstance(node, str):
        return node
    if isinstance(node, _Term):
        return _emit_term(node)
    inner = " ".join(_emit(item) for item in node.items)
    return inner if top else f"({inner})"


def _emit_term(term: _Term) -> str:
    field = term.field or "all"
    text = _fold(term.text)
    if not text:
        raise KeywordError('Empty quotes "" are not a search term; remove them.')
    if field == "cat" and " " not in text:
        text = _category_case(text)
    elif term.quoted and not _PLAIN_WORD.fullmatch(text):
        return f'{field}:"{text}"'
    return f'{field}:"{text}"' if _NEEDS_QUOTES.search(text) else f"{field}:{text}"


def _category_case(text: str) -> str:
    """arXiv's spelling: cs.CV, math.AG, astro-ph.CO, but physics.optics, cond-mat.mes-hall."""
    archive, dot, subject = text.partition(".")
    if archive not in LOWER_SUBJECT_ARCHIVES and subject.isascii():
        subject = subject.upper()
    return archive + dot + subject
