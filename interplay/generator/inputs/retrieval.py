"""Catalog candidates for a reference-free recommender: the k items that best match what the user said so far.

BM25 (the `bm25s` library) over one document per catalog item: its title words, year, decade and attribute values
(genres, ...). Era words in the user's text are read as decades ("90s", "nineties", "'90s", "1994" all mean the
1990s), and everyday words for genres as the genre ("funny" means comedy). The query is built from user turns
only (never the seed's summary, attributes or target), so the recommender learns nothing the conversation did
not say. Ties go to the item earlier in the catalog (MovieLens: the more popular one); a query that matches
nothing gives the catalog's first items.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from interplay.common.titles import TOKEN_RE, norm_token
from interplay.generator.inputs.catalog import Catalog

_DECADE_WORDS = {"twenties": 1920, "thirties": 1930, "forties": 1940, "fifties": 1950, "sixties": 1960,
                 "seventies": 1970, "eighties": 1980, "nineties": 1990, "noughties": 2000}
_DECADE_RE = re.compile(r"^(1[89]|20)?(\d)0s$")  # 1990s, 90s (the apostrophe of '90s and 90's is dropped)
_YEAR_RE = re.compile(r"^(1[89]\d\d|20\d\d)$")
# What people say -> the genre word the catalog uses (MovieLens genres, lowercased).
_GENRE_WORDS = {
    "funny": "comedy", "comedies": "comedy", "hilarious": "comedy", "laugh": "comedy", "scary": "horror",
    "creepy": "horror", "frightening": "horror", "romantic": "romance", "animated": "animation",
    "cartoon": "animation", "kids": "children", "family": "children", "documentaries": "documentary",
    "musicals": "musical", "westerns": "western", "thrilling": "thriller", "suspense": "thriller",
    "suspenseful": "thriller", "tense": "thriller", "dramas": "drama", "dramatic": "drama",
    "space": "sci", "science": "sci", "scifi": "sci", "futuristic": "sci", "mysterious": "mystery",
    "mysteries": "mystery", "detective": "mystery", "epic": "adventure", "adventures": "adventure",
    "magic": "fantasy", "magical": "fantasy", "superhero": "action", "explosions": "action", "criminal": "crime",
    "gangster": "crime", "heist": "crime", "cop": "crime",
}
# Words that carry no wish; they would match title words ("I", "Want", "Something Wild") and drown the genres.
_STOPWORDS = frozenset(
    "a an the and or but if of to in on at for from with by about as into like than then so too very just also "
    "i me my we you your he she it its they them this that these those there here is am are was were be been "
    "being do does did have has had can could would should will shall may might must not no yes ok okay hi "
    "hello thanks thank please what which who whom whose when where why how any some something anything "
    "nothing everything one ones more most less much many few other another again really maybe perhaps "
    "want wanted wants looking look mood feel feeling tonight today watch watching movie movies film films "
    "recommend recommendation suggest suggestion good great nice bit kind sort type see seen fit fits taste "
    "tastes list like liked love loved enjoy enjoyed sure know think thing things "
    # what the teacher's openers and a glad or sorry reply say around a wish ("Can you find me ...", "Hmm, no")
    "find give show tell hmm sorry rather quite hoping hope after perfect sounds oh lovely take absolutely "
    "definitely right exactly "
    # contractions, as norm_token leaves them ("I'll" -> "ill")
    "ill im ive id youre youll youve youd dont doesnt didnt isnt wasnt cant wont thats theres lets whats".split())


def _words(text: str) -> list[str]:
    return [w for m in TOKEN_RE.finditer(text) for w in norm_token(m.group()).split()]


def query_tokens(text: str) -> list[str]:
    """The search terms of free text: content words, plus decade and genre terms for era and genre words."""
    out: list[str] = []
    for word in _words(text):
        if word in _STOPWORDS:
            continue
        out.append(word)
        if (decade := _decade_of(word)) is not None:
            out.append(f"decade{decade}")
        if (genre := _GENRE_WORDS.get(word)) is not None:
            out.append(genre)
    return out


def _decade_of(word: str) -> int | None:
    if word in _DECADE_WORDS:
        return _DECADE_WORDS[word]
    if (m := _YEAR_RE.match(word)) is not None:
        return int(m.group(1)) // 10 * 10
    if (m := _DECADE_RE.match(word)) is not None:
        century, digit = m.group(1), m.group(2)
        # "90s" and "20s" are the 1990s and 1920s, as "nineties" and "twenties" are; "00s" and "10s" the 2000s
        # and 2010s; "2020s" says so itself.
        base = int(century) * 100 if century else (1900 if int(digit) >= 2 else 2000)
        return base + int(digit) * 10
    return None


def item_tokens(title: str, year: int | None, attributes: dict[str, list[str]]) -> list[str]:
    tokens = [w for w in _words(title) if w not in _STOPWORDS]
    if year is not None:
        tokens += [str(year), f"decade{year // 10 * 10}"]
    for values in attributes.values():
        for value in values:
            tokens += _words(value)
            if (decade := _decade_of(norm_token(value))) is not None:  # "1990s" as an attribute value
                tokens.append(f"decade{decade}")
    return tokens


class CandidateIndex:
    """BM25 over the catalog; `search` returns item ids, best first."""

    def __init__(self, catalog: Catalog):
        import bm25s  # only runs that show candidates need it

        self.catalog = catalog
        self.item_ids = [item.item_id for item in catalog]
        docs = [item_tokens(item.title, item.year, item.attributes) for item in catalog]
        self.vocabulary = {token for doc in docs for token in doc}
        self._bm25 = bm25s.BM25()
        self._bm25.index(docs, show_progress=False)

    @staticmethod
    def has_attributes(catalog: Catalog) -> bool:
        """Can a wish be matched on anything but title words? (A catalog of bare titles cannot.)"""
        return any(item.attributes or item.year is not None for item in catalog)

    def search(self, text: str, k: int, *, exclude: Iterable[str] = ()) -> list[str]:
        excluded = set(exclude)
        query = [t for t in query_tokens(text) if t in self.vocabulary]
        want = min(k, len(self.item_ids) - sum(1 for i in excluded if i in self.catalog))
        if want <= 0:
            return []
        ranked: list[str] = []
        if query:
            # Ask for more than k: excluded items are dropped and ties re-sorted by catalog order.
            n = min(len(self.item_ids), 4 * (want + len(excluded)))
            docs, scores = self._bm25.retrieve([query], k=n, show_progress=False, n_threads=1)
            hits = sorted(((-float(s), int(d)) for d, s in zip(docs[0], scores[0]) if s > 0))
            ranked = [self.item_ids[d] for _, d in hits if self.item_ids[d] not in excluded]
        for item_id in self.item_ids:  # too few matches: the catalog's first items fill the list
            if len(ranked) >= want:
                break
            if item_id not in excluded and item_id not in ranked:
                ranked.append(item_id)
        return ranked[:want]


def user_text(history: Sequence[tuple[str, str]]) -> str:
    """What the user said so far: the only text a reference-free recommender's candidates are chosen from."""
    return "\n".join(text for speaker, text in history if speaker == "user")
