"""How the teacher's user simulator is steered (protocol: reference, user.constrain_replies): what each of its
turns must say, as an opener it continues and a regular expression its reply must match (vLLM structured outputs).

    opening             an opener that names what it wants: "I'm in the mood for a thriller from the 1990s."
                        (suggest_from: retrieved: most openings name one wanted attribute, opening_values)
    after a misfit      an opener that names a wanted value the suggestion lacks: "Hmm, no. I'm after something
                        from the 1990s." (the item's card shows what it has; the teacher's note says what it lacks)
    after the target    no opener: one or two sentences of its own that end with the accept marker (with
    (or what fits)      suggest_from: retrieved, after the first suggestion that fits the target attributes)

A small model asked to "say why it does not fit" mostly does not; one forced to name a value somewhere puts it
anywhere ("I'll'80s"). Started on a sentence that says it, it goes on in kind. The openers are part of the
stored turn (the user said them), chosen per conversation and turn; what the simulators learn from the teacher is
then the decision itself: accept what fits, say what is missing from what does not.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence

_DECADE_RE = re.compile(r"^\d{4}s$")
OPENING_TEMPLATES = ("I'm in the mood for {wanted}.", "Can you find me {wanted}?", "I'd love to watch {wanted} tonight.",
                     "I'm looking for {wanted}.", "Something like {wanted} would be great.")
REJECTION_TEMPLATES = ("Not for me, I want {wanted}.", "Hmm, no. I'm after {wanted}.",
                       "Sorry, I'd rather have {wanted}.", "No thanks, I'm in the mood for {wanted}.",
                       "Not quite: I was hoping for {wanted}.")
OPENING_SAYS_ALL = 0.25  # share of openings that say every wanted attribute (suggest_from: retrieved)
# What the simulator adds after an opener: a line, or nothing. No capitals but "I", no digits, no parentheses: a
# title it adds ("Have you seen Blade Runner?") would steer retrieval to title words instead of the wish.
_NO_TITLE = r"([^\n\[\]A-Z0-9()]|I[ '])"
CONTINUATION = rf"( {_NO_TITLE}{{1,80}})?"
# An acceptance: the marker, then glad words of its own within a line or two. No colons,
# semicolons or parentheses: a small model otherwise copies the item's card back ("Heat (1995): Crime; 1990s").
_GLAD = "(Yes|Great|Perfect|Sounds good|That's it|Oh nice|Lovely)"
_PLAIN = r"[^\n\[\].!?:;()]"


def _index(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest(), "little")


def _pick(key: str, options: Sequence[str], turn: int = 0) -> str:
    """One of `options` by `key`; successive turns of a conversation (`turn`) take successive options, so two
    rejections in one dialogue do not say the same words."""
    return options[(_index(key) + turn) % len(options)]


def wanted_phrase(values: Mapping[str, Sequence[str]], key: str, *, item: str = "movie", turn: int = 0) -> str:
    """One value of each attribute, said in words: {"genres": ["Crime", "Drama"], "decade": ["1990s"]} ->
    "a drama movie from the 1990s" (which genre: by `key` and `turn`); an attribute with no values is left out."""
    kinds, eras = [], []
    for name, options in values.items():
        if not options:
            continue
        value = _pick(f"{key}:{name}", list(options), turn)
        (eras if _DECADE_RE.match(value) else kinds).append(value)
    if kinds:
        noun = " ".join(v.lower() for v in kinds)
        phrase = f"{'an' if noun[0] in 'aeiou' else 'a'} {noun} {item}"
    else:
        phrase = "something"
    return phrase + "".join(f" from the {era}" for era in eras)


def opening_values(values: Mapping[str, Sequence[str]], key: str) -> dict[str, list[str]]:
    """What an opening says, with suggest_from: retrieved: every wanted attribute in OPENING_SAYS_ALL of the
    conversations (by `key`), else one of them. Real users say what they want a part at a time, and a suggestion
    retrieved for part of a wish often misses the rest: those rejections are what teach a simulator to check a
    card against the whole wish and say what is missing."""
    named = {name: list(options) for name, options in values.items() if options}
    if len(named) <= 1 or _index(f"{key}:says") % 100 < OPENING_SAYS_ALL * 100:
        return named
    name = _pick(f"{key}:says-one", sorted(named))
    return {name: named[name]}


def opening(values: Mapping[str, Sequence[str]], key: str, *, item: str = "movie") -> str:
    """`key`: the conversation's id."""
    return _pick(f"{key}:opening", OPENING_TEMPLATES).format(wanted=wanted_phrase(values, key, item=item))


def rejection(lacking: Mapping[str, Sequence[str]], key: str, turn: int, *, item: str = "movie") -> str:
    """Names one attribute the suggestion does not meet, with one of its wanted values (which: by the
    conversation's id `key` and the `turn`)."""
    names = [name for name, options in lacking.items() if options]
    name = _pick(f"{key}:attribute", names, turn)
    return _pick(f"{key}:rejection", REJECTION_TEMPLATES, turn).format(
        wanted=wanted_phrase({name: lacking[name]}, key, item=item, turn=turn))


def acceptance(marker_regex: str) -> str:
    """The marker (given as a regular expression), a glad word, a sentence or two of its own. The marker comes
    first, as the user's prompt asks: the decision is the turn's first token, written right after the card that
    decides it. At the end, a trained simulator wrote it after rejections it had just put in words (30 of 166
    rejections, served reference-free: `docs/reproduce.md`)."""
    return rf"{marker_regex} {_GLAD}[,.!]( {_PLAIN}{{1,60}}[.!])?( {_PLAIN}{{1,40}}[.!])?"
