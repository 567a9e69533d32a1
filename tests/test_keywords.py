"""Keyword parsing: the golden table of exact queries, refusals, identity, and robustness."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.fetch.keywords import KeywordError, ParsedKeyword, parse_keyword


def phrase_query(k: str) -> str:
    return f'ti:"{k}" OR abs:"{k}"'


VAD = "video anomaly detection"

# (input, canonical, query): exact strings, the contract with arXiv and with the store.
GOLDEN_PHRASES = [
    ("Video Anomaly Detection", VAD),
    ("  video   anomaly\tdetection  ", VAD),
    ("video\u00a0anomaly\u2009detection", VAD),
    ("VIDEO\u3000ANOMALY\u202fDETECTION", VAD),
    ('"video anomaly detection"', VAD),
    ("\u201cVideo Anomaly Detection\u201d", VAD),
    ("\u00abVision Transformer\u00bb", "vision transformer"),
    ("\u201eVideo\u00a0Understanding\u201f", "video understanding"),
    ("Vision\u2013Language Model", "vision-language model"),
    ("vision\u2014language\u2212model", "vision-language-model"),
    ("non\u2011negative matrix factorization", "non-negative matrix factorization"),
    ("\ufb01ne-tuning", "fine-tuning"),
    ("\uff2c\uff2c\uff2d agents", "llm agents"),
    ("Stra\u00dfe networks", "strasse networks"),
    ("e\u0301tude of graphs", "\u00e9tude of graphs"),
    ("Bayes\u2019 theorem", "bayes' theorem"),
    ("Hilbert space (infinite-dimensional)", "hilbert space (infinite-dimensional)"),
    ("X-ray (XRD): analysis", "x-ray (xrd): analysis"),
    ("ratio 3:2", "ratio 3:2"),
    ("foo:bar baz", "foo:bar baz"),
    ("rock and roll", "rock and roll"),
    ('"Rock AND Roll"', "rock and roll"),
    ("<!channel> &amp; friends", "<!channel> &amp; friends"),
    ("'; DROP TABLE keywords; --", "'; drop table keywords; --"),
    ("<script>alert(1)</script>", "<script>alert(1)</script>"),
]

GOLDEN_SYNTAX = [
    ("ti:transformer", "ti:transformer"),
    ("TI:Transformer", "ti:transformer"),
    ('au:"Yann LeCun"', 'au:"yann lecun"'),
    ("abs:diffusion AND co:accepted", "abs:diffusion AND co:accepted"),
    ("jr:Nature OR rn:CERN-TH-2024", "jr:nature OR rn:cern-th-2024"),
    ("All:graphene", "all:graphene"),
    ("au:M\u00fcller", "au:m\u00fcller"),
    ("ti:\ufb01ne-tuning", "ti:fine-tuning"),
    ("\uff34\uff29\uff1a\uff56\uff49\uff44\uff45\uff4f", "ti:video"),
    ('ti:"transformer"', "ti:transformer"),
    ('ti:"  Vision\u00a0Transformer "', 'ti:"vision transformer"'),
    ("abs:\u201cself\u2013supervised\u201d", 'abs:"self-supervised"'),
    ("cat:CS.cv", "cat:cs.CV"),
    ('cat:"cs.cv"', "cat:cs.CV"),
    ("cat:math.ag OR cat:STAT.ml", "cat:math.AG OR cat:stat.ML"),
    ("cat:Astro-Ph.co OR cat:q-bio.nc", "cat:astro-ph.CO OR cat:q-bio.NC"),
    (
        "cat:eess.sp OR cat:econ.em OR cat:q-fin.st OR cat:nlin.ao",
        "cat:eess.SP OR cat:econ.EM OR cat:q-fin.ST OR cat:nlin.AO",
    ),
    (
        "cat:physics.Optics OR cat:Cond-Mat.Mes-Hall",
        "cat:physics.optics OR cat:cond-mat.mes-hall",
    ),
    ("cat:HEP-TH", "cat:hep-th"),
    ("ti:video and au:smith", "ti:video AND au:smith"),
    ("ti:a or ti:b Andnot ti:c", "ti:a OR ti:b ANDNOT ti:c"),
    ("cat:cs.CV ANDNOT ti:survey", "cat:cs.CV ANDNOT ti:survey"),
    ("ti:a   AND\u00a0\u00a0ti:b", "ti:a AND ti:b"),
    ("(ti:video)", "ti:video"),
    ("((ti:a OR ti:b))", "ti:a OR ti:b"),
    ("(ti:a AND ti:b) AND ti:c", "ti:a AND ti:b AND ti:c"),
    ("ti:a OR (ti:b OR (ti:c OR ti:d))", "ti:a OR ti:b OR ti:c OR ti:d"),
    ("(ti:a OR ti:b) AND ti:c", "(ti:a OR ti:b) AND ti:c"),
    ("ti:a AND (ti:b OR ti:c)", "ti:a AND (ti:b OR ti:c)"),
    ("ti:a AND (ti:b AND ti:c) OR ti:d", "ti:a AND (ti:b AND ti:c) OR ti:d"),
    ("(ti:a ANDNOT ti:b) ANDNOT ti:c", "(ti:a ANDNOT ti:b) ANDNOT ti:c"),
    (
        "cat:cs.cv AND ((ti:video AND ti:anomaly) OR (abs:surveillance ANDNOT ti:survey))",
        "cat:cs.CV AND ((ti:video AND ti:anomaly) OR (abs:surveillance ANDNOT ti:survey))",
    ),
    ("(((ti:a AND (ti:b))))", "ti:a AND ti:b"),
    ("transformer AND ti:vision", "all:transformer AND ti:vision"),
    ("Video OR Image", "all:video OR all:image"),
    ('"Video Anomaly" OR ti:"Anomaly Detection"', 'all:"video anomaly" OR ti:"anomaly detection"'),
    ("ti:video anomaly", "ti:video AND all:anomaly"),
    ("(ti:a OR ti:b)(ti:c OR ti:d)", "(ti:a OR ti:b) AND (ti:c OR ti:d)"),
    ("ti:x AND foo:bar", 'ti:x AND all:"foo:bar"'),
    ("Ti:sapphire laser", "ti:sapphire AND all:laser"),
]


def excluding(phrase: str, *left_out: str) -> str:
    return " ANDNOT ".join([f"({phrase_query(phrase)})", *(f"({phrase_query(x)})" for x in left_out)])


# (input, canonical, query): a phrase with words or phrases left out (-word, -"a phrase").
GOLDEN_EXCLUSIONS = [
    ("video anomaly detection -surveillance", "video anomaly detection -surveillance",
     excluding(VAD, "surveillance")),
    ('video anomaly detection -surveillance -"crowd counting"',
     'video anomaly detection -"crowd counting" -surveillance',
     excluding(VAD, "crowd counting", "surveillance")),
    ('Video Anomaly Detection -"Crowd  Counting" -SURVEILLANCE -surveillance',
     'video anomaly detection -"crowd counting" -surveillance',
     excluding(VAD, "crowd counting", "surveillance")),
    ('"Video Anomaly Detection" -surveillance', "video anomaly detection -surveillance",
     excluding(VAD, "surveillance")),
    ("video -surveillance anomaly", "video anomaly -surveillance",
     excluding("video anomaly", "surveillance")),
    ("video anomaly detection \u2013surveillance", "video anomaly detection -surveillance",
     excluding(VAD, "surveillance")),
    ("diffusion -\ufb01ne-tuning", "diffusion -fine-tuning", excluding("diffusion", "fine-tuning")),
    ('graph networks -"(spectral)"', 'graph networks -"(spectral)"',
     excluding("graph networks", "(spectral)")),
    ("vision-language model", "vision-language model", phrase_query("vision-language model")),
    ("temperature -40 degrees", "temperature -40 degrees",
     phrase_query("temperature -40 degrees")),
    ("spin - orbit coupling", "spin - orbit coupling", phrase_query("spin - orbit coupling")),
]


@pytest.mark.parametrize(("text", "canonical", "query"), GOLDEN_EXCLUSIONS)
def test_golden_exclusions(text: str, canonical: str, query: str) -> None:
    parsed = parse_keyword(text)
    assert (parsed.canonical, parsed.query, parsed.is_syntax) == (canonical, query, False)
    again = parse_keyword(canonical)  # the canonical form reads back as itself
    assert (again.canonical, again.query) == (canonical, query)


def test_exclusions_keep_what_was_typed_for_display() -> None:
    parsed = parse_keyword('Video Anomaly Detection  -Surveillance -"Crowd Counting"')
    assert parsed.display == 'Video Anomaly Detection -Surveillance -"Crowd Counting"'


@pytest.mark.parametrize("text", [
    "video anomaly detection NOT surveillance", "NOT surveillance", "ti:video NOT ti:survey",
    "ti:video not ti:survey", "(cat:cs.CV) not ti:video",
])
def test_a_standalone_not_is_explained(text: str) -> None:
    with pytest.raises(KeywordError) as caught:
        parse_keyword(text)
    assert caught.value.message == (
        "arXiv has no NOT. To leave a word out, put a minus before it: video anomaly detection "
        "-surveillance; in arXiv syntax write ANDNOT: ti:video ANDNOT ti:survey.")


def test_not_as_a_word_of_a_phrase_stays_a_word() -> None:
    assert parse_keyword("not hotdog").canonical == "not hotdog"
    assert parse_keyword('"NOT gate"').canonical == "not gate"  # quoted: the phrase


@pytest.mark.parametrize(("text", "message"), [
    ("-surveillance", "Write what to look for before what to leave out, e.g. "
                      "video anomaly detection -surveillance."),
    ('-"crowd counting" -x', "Write what to look for before what to leave out, e.g. "
                             "video anomaly detection -surveillance."),
    ('video -""', 'Empty quotes "" are not a search term; remove them.'),
    ('video -"crowd', 'The double quotes are unbalanced: every opening " needs a closing one.'),
    ("video -(crowd", "The parentheses are unbalanced: a ( is never closed."),
])
def test_exclusion_refusals(text: str, message: str) -> None:
    with pytest.raises(KeywordError) as caught:
        parse_keyword(text)
    assert caught.value.message == message


@pytest.mark.parametrize(("text", "canonical"), GOLDEN_PHRASES)
def test_golden_phrase(text: str, canonical: str) -> None:
    parsed = parse_keyword(text)
    assert (parsed.canonical, parsed.query, parsed.is_syntax) == (
        canonical,
        phrase_query(canonical),
        False,
    )


@pytest.mark.parametrize(("text", "canonical"), GOLDEN_SYNTAX)
def test_golden_syntax(text: str, canonical: str) -> None:
    parsed = parse_keyword(text)
    assert (parsed.canonical, parsed.query, parsed.is_syntax) == (canonical, canonical, True)


def test_golden_table_is_large_enough() -> None:
    assert len(GOLDEN_PHRASES) + len(GOLDEN_SYNTAX) >= 40
    assert len(GOLDEN_EXCLUSIONS) >= 10


def test_quoted_phrase_that_reads_as_syntax_keeps_its_quotes() -> None:
    """So it can never share an identity with the syntax it resembles."""
    phrase = parse_keyword('"Ti:sapphire laser"')
    assert phrase == ParsedKeyword(
        display='"Ti:sapphire laser"',
        canonical='"ti:sapphire laser"',
        query='ti:"ti:sapphire laser" OR abs:"ti:sapphire laser"',
        is_syntax=False,
    )
    assert parse_keyword("Ti:sapphire laser").canonical != phrase.canonical


def test_display_keeps_what_was_typed_but_tidied() -> None:
    parsed = parse_keyword("  Vision\u2013Language\u00a0\u00a0Models\u2019 \ufb01ne-tuning  ")
    assert parsed.display == "Vision\u2013Language Models' \ufb01ne-tuning"
    assert parsed.canonical == "vision-language models' fine-tuning"
    assert parse_keyword("\u201cVideo  Anomaly\u201d").display == '"Video Anomaly"'


# --- refusals ---------------------------------------------------------------------------------

LENGTH = "A keyword needs 2 to 200 characters; yours has {}."
QUOTES = 'The double quotes are unbalanced: every opening " needs a closing one.'
INNER_QUOTES = (
    "A phrase cannot contain double quotes: remove them, quote the whole phrase, "
    'or use arXiv syntax such as ti:"exact words".'
)
UNCLOSED = "The parentheses are unbalanced: a ( is never closed."
UNOPENED = "The parentheses are unbalanced: a ) has no matching (."
EMPTY = "The keyword is empty: write a few words, e.g. video anomaly detection."


def operand(op: str) -> str:
    hint = f"write {op.lower()} in lower case to search for the word"
    return f"{op} needs a term on each side ({hint})."


REFUSALS = [
    ("", EMPTY),
    ("  \t\u00a0\n ", EMPTY),
    ("a", LENGTH.format(1)),
    ("x" * 201, LENGTH.format(201)),
    ("video " * 500, LENGTH.format(2999)),
    ('"a"', LENGTH.format(1)),
    ("video\nanomaly", "A keyword cannot contain a line break (U+000A); please remove it."),
    ("video\ranomaly", "A keyword cannot contain a carriage return (U+000D); please remove it."),
    (
        "video\x07anomaly",
        "A keyword cannot contain a control character (U+0007); please remove it.",
    ),
    (
        "video\u200banomaly",
        "A keyword cannot contain the invisible character ZERO WIDTH SPACE (U+200B); "
        "please remove it.",
    ),
    (
        "\ufeffvideo anomaly",
        "A keyword cannot contain the invisible character ZERO WIDTH NO-BREAK SPACE (U+FEFF); "
        "please remove it.",
    ),
    (
        "video \ud800 anomaly",
        "A keyword cannot contain a broken (unpaired surrogate) character (U+D800); "
        "please remove it.",
    ),
    ('"video anomaly', QUOTES),
    ("\u201cvideo anomaly", QUOTES),
    ('ti:"video', QUOTES),
    ('the "best" model', INNER_QUOTES),
    ('"video" "anomaly"', INNER_QUOTES),
    ('12" vinyl', QUOTES),
    ("video (anomaly", UNCLOSED),
    ("video) anomaly (", UNOPENED),
    ("(ti:a OR ti:b", UNCLOSED),
    ("ti:a) OR (ti:b", UNOPENED),
    ("AND video", operand("AND")),
    ("video OR", operand("OR")),
    ("OR", operand("OR")),
    ("ti:a ANDNOT", operand("ANDNOT")),
    ("ti:a AND (ti:b OR)", operand("OR")),
    ("ti:a AND OR ti:b", "Two operators in a row (AND OR): put a term between them."),
    ("ti:", "ti: needs a term right after it, e.g. ti:video."),
    ("ti: video", "ti: needs a term right after it, e.g. ti:video."),
    ("(CAT:) AND ti:a", "cat: needs a term right after it, e.g. cat:video."),
    (
        "ti:(a b)",
        "Write (ti:a OR ti:b) instead of ti:(a b): "
        "arXiv does not accept a field before parentheses.",
    ),
    (
        "AU:(smith jones)",
        "Write (au:a OR au:b) instead of au:(a b): "
        "arXiv does not accept a field before parentheses.",
    ),
    ('ti:""', 'Empty quotes "" are not a search term; remove them.'),
    ('ti:a OR "  "', 'Empty quotes "" are not a search term; remove them.'),
    ("ti:a AND ()", "Empty parentheses () are not a search term; remove them."),
]


@pytest.mark.parametrize(("text", "message"), REFUSALS)
def test_refusal(text: str, message: str) -> None:
    with pytest.raises(KeywordError) as caught:
        parse_keyword(text)
    assert caught.value.message == message
    assert str(caught.value) == message


def test_length_is_checked_before_anything_else() -> None:
    """A huge line is refused by its length alone, whatever it holds."""
    for line in ("\x00" * 10_000, '"(' * 5_000, "\ufdfa" * 10_000, "ti:(" * 2_500):
        with pytest.raises(KeywordError) as caught:
            parse_keyword(line)
        assert caught.value.message == LENGTH.format(10_000)


def test_keyword_error_is_a_value_error() -> None:
    assert issubclass(KeywordError, ValueError)


# --- identity ---------------------------------------------------------------------------------

SAME_KEYWORD = [
    [
        "Video Anomaly Detection",
        "video anomaly detection",
        " VIDEO  ANOMALY\tDETECTION ",
        "video\u00a0anomaly\u2009detection",
        '"Video Anomaly Detection"',
        "\u201cvideo anomaly detection\u201d",
        "\uff56\uff49\uff44\uff45\uff4f anomaly detection",
    ],
    [
        "Vision-Language Model",
        "Vision\u2013Language Model",
        "vision\u2014language model",
        "VISION\u2011LANGUAGE\u3000MODEL",
    ],
    [
        "cat:cs.CV AND ti:video",
        "CAT:CS.CV and TI:Video",
        "(cat:cs.cv) AND (ti:video)",
        '((cat:cs.CV AND ti:"video"))',
        "cat:cs.CV ti:video",
    ],
    [
        "ti:a OR ti:b OR ti:c",
        "(ti:a OR ti:b) OR ti:c",
        "ti:a OR (ti:b OR ti:c)",
        "ti:a or ti:b or ti:c",
    ],
    [
        'video anomaly detection -surveillance -"crowd counting"',
        'Video Anomaly Detection -"Crowd Counting" -Surveillance',
        'video -surveillance anomaly detection -"CROWD\u00a0COUNTING"',
        'video anomaly detection -"crowd counting" -surveillance -surveillance',
    ],
]


@pytest.mark.parametrize("spellings", SAME_KEYWORD)
def test_spellings_of_one_keyword_share_identity_and_query(spellings: list[str]) -> None:
    parsed = {(p.canonical, p.query) for p in map(parse_keyword, spellings)}
    assert len(parsed) == 1


def test_groupings_that_change_meaning_stay_distinct() -> None:
    spellings = [
        "ti:a OR ti:b AND ti:c",
        "(ti:a OR ti:b) AND ti:c",
        "ti:a OR (ti:b AND ti:c)",
        "ti:a ANDNOT ti:b ANDNOT ti:c",
        "ti:a ANDNOT (ti:b ANDNOT ti:c)",
    ]
    canonicals = [parse_keyword(s).canonical for s in spellings]
    assert canonicals == [
        "ti:a OR ti:b AND ti:c",
        "(ti:a OR ti:b) AND ti:c",
        "ti:a OR (ti:b AND ti:c)",
        "ti:a ANDNOT ti:b ANDNOT ti:c",
        "ti:a ANDNOT (ti:b ANDNOT ti:c)",
    ]


# --- robustness -------------------------------------------------------------------------------

# Pieces that reach every branch of the parser; joined at random by hypothesis.
# fmt: off
FRAGMENTS = [
    "ti:", "AU:", "cat:", "all:", "abs:", "cs.cv", "video", "Anomaly", "(", ")", '"', "\u201c",
    "\u201d", " ", "  ", "AND", "or", "ANDNOT", "and", "\u00a0", "\ufb01", "\u2013", ":", "foo:",
    "<!channel>", "&amp;", "<b>", "\t", "\n", "\u200b", "\u2474", "\u00df", "'", ";", "--", "*",
]
# fmt: on
ANY_TEXT = st.one_of(
    st.text(),
    st.text(max_size=400),
    st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join),
)
PROPERTY = settings(
    max_examples=400,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def assert_fair_refusal(text: str, error: KeywordError) -> None:
    """Short, and never echoes more than 40 characters of what was typed."""
    assert error.message
    assert len(error.message) <= 200
    if len(text) > 40:
        assert not any(text[i : i + 41] in error.message for i in range(len(text) - 40))


@PROPERTY
@given(ANY_TEXT)
def test_any_text_is_parsed_or_refused_cleanly(text: str) -> None:
    try:
        parsed = parse_keyword(text)
    except KeywordError as error:
        assert_fair_refusal(text, error)
        return
    assert parsed.canonical == parsed.canonical.strip()
    assert "  " not in parsed.canonical
    assert parsed.query.count('"') % 2 == 0
    if parsed.is_syntax:
        assert parsed.query == parsed.canonical
    if len(parsed.canonical) <= 200:  # the canonical form is a fixed point
        again = parse_keyword(parsed.canonical)
        assert (again.canonical, again.query, again.is_syntax) == (
            parsed.canonical,
            parsed.query,
            parsed.is_syntax,
        )


@PROPERTY
@given(
    st.text(
        st.characters(blacklist_categories=("Zs", "Zl", "Zp", "Cc")), min_size=201, max_size=10_000
    )
)
def test_long_lines_are_refused_by_length(text: str) -> None:
    with pytest.raises(KeywordError) as caught:
        parse_keyword(text)
    assert caught.value.message == LENGTH.format(len(text))
    assert_fair_refusal(text, caught.value)


@pytest.mark.parametrize(
    "fragment",
    ["<!channel> ", "&amp;", "<script>alert(1)</script>", "' OR 1=1; --", "\u00a0", "ti:(a "],
)
def test_ten_thousand_character_lines_are_refused(fragment: str) -> None:
    line = ("x" + fragment * 10_000)[:10_000]
    with pytest.raises(KeywordError) as caught:
        parse_keyword(line)
    assert "yours has" in caught.value.message
    assert_fair_refusal(line, caught.value)
