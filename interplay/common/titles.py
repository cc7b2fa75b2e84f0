"""Title normalisation: the one rule for when two spellings name the same title.

Used by catalog grounding, the MovieLens builder's leak filter, training's leak filter and the report's leakage
metric, so "The Matrix", "Matrix, The" and " MATRIX! " are one title everywhere.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

ARTICLES = frozenset({"the", "a", "an"})
TOKEN_RE = re.compile(r"[^\W_]+(?:['’.\-][^\W_]+)*|&")
YEAR = r"(1[89]\d\d|20\d\d)"
TRAILING_YEAR_RE = re.compile(r"\s*\(\s*" + YEAR + r"\s*\)\s*$")
# MovieLens style "Matrix, The" / "Haine, La" / "Armée des ombres, L'".
_TRAIL_ART_RE = re.compile(r"^(?P<body>.*?\S),\s*(?P<art>the|an?|la|les?|l['’]|il|el|los|las|das|der|die)$", re.I)
_AKA_RE = re.compile(r"^\s*(?:a\.?\s?k\.?\s?a\.?|aka)\s+", re.IGNORECASE)
_TAIL_PARENS_RE = re.compile(r"^(?P<main>.*?\S)(?P<tail>(?:\s*\([^()]*\))+)$")
_PAREN_RE = re.compile(r"\(([^()]*)\)")


def _move_article(s: str) -> str:
    """'Matrix, The' -> 'The Matrix'; "Armée des ombres, L'" -> "L'Armée des ombres"."""
    m = _TRAIL_ART_RE.match(s.strip())
    if not m:
        return s.strip()
    return m["art"] + ("" if m["art"][-1] in "'’" else " ") + m["body"]


def _split_title(title: str) -> tuple[str, list[str]]:
    """'Seven (a.k.a. Se7en)' -> ('Seven', ['a.k.a. Se7en']): main title, trailing parentheses."""
    title = " ".join(title.split())
    m = _TAIL_PARENS_RE.match(title)  # no match for "(500) Days of Summer": nothing trails
    return (m["main"], _PAREN_RE.findall(m["tail"])) if m else (title, [])


def fix_title(raw: str) -> str:
    """Display form of a stored title: articles moved to the front, in alternative names too."""
    main, alts = _split_title(raw)
    return _move_article(main) + "".join(f" ({_move_article(a)})" for a in alts)


@lru_cache(maxsize=1 << 16)
def norm_token(tok: str) -> str:
    """One token's key: casefolded, no accents, "'" and "." dropped; "x-men" -> "x men"."""
    if tok == "&":
        return "and"
    if tok.isascii():
        s = tok.lower()
    else:  # casefold before NFKD, so that e.g. "İ" loses its dot like any other accent
        s = "".join(c for c in unicodedata.normalize("NFKD", tok.casefold()) if not unicodedata.combining(c))
    s = s.replace("'", "").replace("’", "").replace(".", "").replace("-", " ")
    if not s.replace(" ", "").isalnum():  # NFKD can introduce symbols ("½" -> "1⁄2")
        s = re.sub(r"[^\w ]|_", " ", s)
    return " ".join(s.split())


def title_key(norms: list[str]) -> str:
    """Join token keys into a title key, dropping one leading English article."""
    norms = [n for n in norms if n]
    if len(norms) > 1 and norms[0] in ARTICLES:
        norms = norms[1:]
    return " ".join(norms)


def token_norms(s: str) -> list[str]:
    return [norm_token(m.group()) for m in TOKEN_RE.finditer(unicodedata.normalize("NFC", s))]


def normalize(s: str) -> str:
    """Matching key of a title: 'The Matrix', 'Matrix, The' and ' MATRIX! ' all give 'matrix'."""
    return title_key(token_norms(_move_article(s)))


def title_keys(title: str) -> tuple[list[str], list[str], bool]:
    """(primary keys, alias keys, does the main title start with an article?)."""
    main, alts = _split_title(title)
    aliases = [normalize(_AKA_RE.sub("", a)) for a in alts]
    norms = [n for n in token_norms(_move_article(main)) if n]
    has_article = len(norms) > 1 and norms[0] in ARTICLES
    if has_article:  # a reply may copy catalog style "Matrix, The"
        aliases.append(" ".join(norms[1:] + norms[:1]))
    primary = [normalize(title), normalize(main)]
    return [k for k in dict.fromkeys(primary) if k], [k for k in dict.fromkeys(aliases) if k], has_article


def mentions(text: str, title: str, *, min_words: int = 1) -> bool:
    """Does `text` name `title` (any of its names, as whole words, however spelled)? Names shorter than
    `min_words` words are not looked for: one-word titles ("Heat", "Up") are everyday words in prose."""
    ym = TRAILING_YEAR_RE.search(title)  # "Heat (1995)": the year is no name of its own
    primary, aliases, _ = title_keys(title[:ym.start()] if ym and ym.start() > 0 else title)
    names = [k for k in primary + aliases if len(k.split()) >= min_words]
    haystack = f" {normalize(text)} "
    return any(f" {name} " in haystack for name in names)
