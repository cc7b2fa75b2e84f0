"""Item catalog and grounding: which catalog items does a free-text reply name?

The recommender is a small LLM asked to write items as "Title (Year)", but it
drifts: wrong case, missing years, "Matrix, The", curly quotes, markdown.
`Catalog.ground` matches tolerantly while keeping precision: everyday words
that are also film titles ("Heat", "Up", "It") are only grounded when the text
marks them as a title (a year, quotes/markdown, or a list item). Everything is
precomputed in `Catalog.__init__`, so `ground` does dict lookups only.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left
from pathlib import Path
from typing import Iterable, Iterator

from interplay.common.titles import ARTICLES, TOKEN_RE, TRAILING_YEAR_RE, YEAR, norm_token, title_key, title_keys
from interplay.generator.inputs.items import CatalogError, Item, read_items

__all__ = ["Catalog", "CatalogError", "Item"]

_MAX_SPAN = 12  # longest title we look for, in tokens; longer spans are prose
# Words that may sit lowercase inside a capitalised title ("Lord of the Rings").
_CONNECTORS = frozenset("of the a an and in on at to for from with by or vs de la le les du des del von van".split())
_ABBREVS = frozenset("mr mrs ms dr st jr sr vs vol no".split())  # "Mr. Smith": that "." ends no sentence
_JOINERS = frozenset({"", ",", ":", "-", "–", "—"})  # punctuation allowed between words of a title
_YEAR_PAREN_RE = re.compile(r"\(\s*" + YEAR + r"\s*\)")
# Quoted / emphasised spans. Single quotes take a lazy body that must not be followed by a
# letter, so apostrophes may live inside: 'Schindler's List'.
_QUOTE_RES = tuple(re.compile(p) for p in (
    r'"([^"\n]{1,200})"', r"“([^”\n]{1,200})”", r"„([^“”\n]{1,200})[“”]", r"«([^»\n]{1,200})»",
    r"(?<!\w)'([^\n]{1,200}?)'(?!\w)", r"(?<!\w)‘([^\n]{1,200}?)’(?!\w)",
    r"\*\*([^*\n]{1,200})\*\*", r"__([^_\n]{1,200})__",
    r"(?<![\w*])\*([^*\n]{1,200})\*(?![\w*])", r"(?<![\w_])_([^_\n]{1,200})_(?![\w_])",
))  # fmt: skip
_LIST_RE = re.compile(r"^[ \t]*(?:\d{1,3}[.)]|[-*•+▪‣◦])[ \t]+(.+)$", re.MULTILINE)
_DELIM_RE = re.compile(r"\s+[-–—]+\s+|\s*[–—]\s*|:|,\s")


def _is_cap(tok: str) -> bool:
    return tok[0].isupper() or tok[0].istitle() or tok[0].isdigit()


# ---------------------------------------------------------------------- catalog


class Catalog:
    """Items in priority order (first wins on ambiguous titles), indexed for grounding."""

    def __init__(self, items: Iterable[Item]) -> None:
        self._items: dict[str, Item] = {}
        self.num_skipped: dict[str, int] = {}  # reason -> rows skipped
        # Items whose title and year repeat an earlier item's: kept (their ids resolve as targets), but grounding
        # always names the first one, so they are never recommended. Reported, not skipped.
        self.num_duplicate_titles = 0
        title_years: set[tuple[str, int | None]] = set()
        tiers: tuple[dict[str, list[str]], dict[str, list[str]]] = ({}, {})  # primary, alias
        # "The Matrix" -> id: lets "I recommend The Matrix" ground although "matrix" is one word.
        self._article_ids: dict[str, str] = {}
        for item in items:
            if not isinstance(item, Item):
                raise TypeError(f"Catalog expects Item objects, got {type(item).__name__}")
            if item.item_id in self._items:
                self.num_skipped["duplicate item_id"] = self.num_skipped.get("duplicate item_id", 0) + 1
                continue
            self._items[item.item_id] = item
            primary, aliases, has_article = title_keys(item.title)
            if (primary[0] if primary else "", item.year) in title_years:
                self.num_duplicate_titles += 1
            title_years.add((primary[0] if primary else "", item.year))
            for tier, keys in zip(tiers, (primary, aliases)):
                for k in keys:
                    tier.setdefault(k, []).append(item.item_id)
            if has_article:
                self._article_ids.setdefault(primary[-1], item.item_id)
        # A real title beats an alternative name; within a tier catalog order decides.
        self._by_title: dict[str, list[str]] = {}
        for tier in tiers:
            for k, ids in tier.items():
                bucket = self._by_title.setdefault(k, [])
                bucket.extend(i for i in ids if i not in bucket)
        self._by_title_year: dict[tuple[str, int], str] = {}
        self._prefixes: set[str] = set()  # word prefixes of all keys: stops span growth early
        for k, ids in self._by_title.items():
            for i in ids:
                if (year := self._items[i].year) is not None:
                    self._by_title_year.setdefault((k, year), i)
            words = k.split()
            self._prefixes.update(" ".join(words[:n]) for n in range(1, len(words) + 1))

    @classmethod
    def load(cls, path: str | Path) -> Catalog:
        """Read a .parquet or .jsonl catalog (columns item_id, title, year, attributes).

        Bad rows are skipped and counted in `num_skipped`; a file unusable as a
        whole (missing, unreadable, no item_id/title column, no usable row)
        raises CatalogError.
        """
        p = Path(path)
        items, skipped = read_items(p)
        catalog = cls(items)
        for reason, count in skipped.items():
            catalog.num_skipped[reason] = catalog.num_skipped.get(reason, 0) + count
        if not catalog:
            summary = ", ".join(f"{r}: {c}" for r, c in catalog.num_skipped.items()) or "empty file"
            raise CatalogError(f"{p}: no usable rows ({summary})")
        return catalog

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._items

    def __iter__(self) -> Iterator[Item]:
        return iter(self._items.values())

    def get(self, item_id: str) -> Item | None:
        return self._items.get(item_id)

    def _resolve(self, key: str, year: int | None) -> str | None:
        if year is not None and (hit := self._by_title_year.get((key, year))) is not None:
            return hit
        ids = self._by_title.get(key)
        if not ids or year is None or len(ids) == 1:
            return ids[0] if ids else None
        # Year given but wrong: take the closest (LLMs are often off by one); ties -> catalog order.
        return min(ids, key=lambda i: abs((self._items[i].year or -10_000) - year))

    def ground(self, text: str) -> list[str]:
        """Item ids named in `text`, in order of first mention, without duplicates."""
        text = unicodedata.normalize("NFC", text)
        toks = list(TOKEN_RE.finditer(text))
        starts = [t.start() for t in toks]
        norms = [norm_token(t.group()) for t in toks]
        found: list[tuple[int, str]] = []
        claimed: list[tuple[int, int]] = []  # char spans already explained by a stronger rule

        def free(a: int, b: int) -> bool:
            return all(b <= ca or a >= cb for ca, cb in claimed)

        def span(a: int, b: int) -> tuple[int, int]:  # token index range inside chars [a, b)
            i, j = bisect_left(starts, a), bisect_left(starts, b)
            while j > i and toks[j - 1].end() > b:
                j -= 1
            return i, j

        def take(a: int, b: int, item_id: str | None) -> bool:
            if item_id is not None:
                found.append((a, item_id))
                claimed.append((a, b))
            return item_id is not None

        # (1) "<title> (YYYY)": longest word run right before the year on the same line;
        # an exact (title, year) match anywhere in the run beats a title with another year.
        prev_end = 0
        for m in _YEAR_PAREN_RE.finditer(text):
            year, lo = int(m.group(1)), max(prev_end, text.rfind("\n", 0, m.start()) + 1)
            prev_end = m.end()
            i0, j = span(lo, m.start())
            cands = [(i, title_key(norms[i:j])) for i in range(max(i0, j - _MAX_SPAN), j)]
            hit = next(((i, h) for i, k in cands if (h := self._by_title_year.get((k, year)))), None)
            hit = hit or next(((i, h) for i, k in cands if (h := self._resolve(k, year))), None)
            if hit:
                take(starts[hit[0]], m.end(), hit[1])

        # (2) quoted / emphasised spans, whole, optionally ending in "(YYYY)".
        for rx in _QUOTE_RES:
            for m in rx.finditer(text):
                a, b = m.span(1)
                if free(*m.span()):
                    ym = TRAILING_YEAR_RE.search(text, a, b)
                    year = int(ym.group(1)) if ym and ym.start() > a else None
                    i, j = span(a, ym.start() if ym and year is not None else b)
                    take(m.start(), m.end(), self._resolve(title_key(norms[i:j]), year))

        # (3) list items ("1. Heat - a crime film", "- Heat: ..."): text up to a delimiter,
        # longest first, so "Star Wars: Episode IV - A New Hope - space opera" still works.
        for m in _LIST_RE.finditer(text):
            a, body = m.start(1), m.group(1)
            end = body.find("(") if body.find("(") > 0 else len(body)
            for cut in reversed([d.start() for d in _DELIM_RE.finditer(body, 0, end)][:7] + [end]):
                i, j = span(a, a + cut)
                if i < j and free(starts[i], toks[j - 1].end()):
                    if take(starts[i], toks[j - 1].end(), self._resolve(title_key(norms[i:j]), None)):
                        break

        # (4) capitalised runs matching a whole title of >= 2 words ("I recommend Pulp Fiction").
        i = 0
        while i < len(toks):
            best = self._cap_match(text, toks, norms, i)
            if best is not None and free(starts[i], toks[best[0]].end()):
                take(starts[i], toks[best[0]].end(), best[1])
                i = best[0]
            i += 1

        found.sort(key=lambda f: f[0])
        return list(dict.fromkeys(item_id for _, item_id in found))

    def _cap_match(self, text: str, toks: list[re.Match[str]], norms: list[str], i: int) -> tuple[int, str] | None:
        """Longest multi-word title starting at capitalised token i: (its last token, item id)."""
        if not _is_cap(toks[i].group()):
            return None
        first = i + 1 if norms[i] in ARTICLES else i  # keys carry no leading "the"
        parts: list[str] = []
        best = None
        for j in range(i, min(len(toks), i + _MAX_SPAN + 1)):
            tok = toks[j].group()
            if j > i:
                sep = text[toks[j - 1].end() : toks[j].start()].strip(" \t")
                joined = sep in _JOINERS or (sep == "." and norms[j - 1] in _ABBREVS)
                if not joined or not (_is_cap(tok) or norms[j] in _CONNECTORS):
                    break
            if j < first or not norms[j]:
                continue
            parts.append(norms[j])
            key = " ".join(parts)
            if key not in self._prefixes:
                break
            # A title must end on a capitalised word and have >= 2 words, so "It", "Up" never
            # come from bare capitalisation; "The Heat" only if a title really is "The Heat".
            if not _is_cap(tok):
                continue
            if " " in key and (ids := self._by_title.get(key)):
                best = (j, ids[0])
            elif j == first > i and key in self._article_ids:
                best = (j, self._article_ids[key])
        # The match must not be cut out of a longer name: "The Matrix Reloaded" is not "The Matrix".
        if best and best[0] + 1 < len(toks) and _is_cap((nxt := toks[best[0] + 1]).group()):
            return None if not text[toks[best[0]].end() : nxt.start()].strip(" \t") else best
        return best
