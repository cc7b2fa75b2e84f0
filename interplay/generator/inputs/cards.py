"""Item cards: what a recommender interface shows beside a suggested item, so that the user simulator can judge it.

    Jackie Brown (1997): Crime, Drama, Thriller; 1990s

A card is the item's display name and its attribute values from the catalog (each attribute's values joined by
", ", attributes by "; "). With `user.item_cards` the user simulator reads, after each recommender message, the
card of every catalog item that message names; the recommender's candidate lists carry the same cards. A small
model does not know what "Jackie Brown (1997)" is; with its card it can tell whether it fits what it wants, as a
large model could not for a catalog of items it has never heard of. Cards describe the suggested items, never the
target, so the reference-free prompts hold nothing of the target.

With `user.card_fit` each card the user simulator reads also says whether the item fits what the simulator was
told it wants (its target attributes, never the target), by the rule the report's decision figures use
(common/attributes.py), and what it lacks if not:

    (Jackie Brown (1997): Crime, Drama, Thriller; 1990s. Fits what you want.)
    (Toy Story (1995): Animation, Children, Comedy; 1990s. Lacks what you want: Crime.)

A 135M model trained on cards alone accepted fitting and non-fitting suggestions alike (32% against 30%,
docs/reproduce.md): comparing a card's values with a wish stated at the top of a long prompt is more than it
learns in 75 steps. A real interface often does this comparison for its user ("matches your filters"); here it
makes the decision local to the card, so the trained simulator learns when to accept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from interplay.common.attributes import missing
from interplay.generator.inputs.catalog import Catalog
from interplay.generator.inputs.items import Item

DEFAULT_MAX_CARD_CHARS = 160
MAX_CARDS_PER_TURN = 3  # a message that names more items shows the cards of its first three


def card_text(item: Item) -> str:
    values = "; ".join(", ".join(v) for v in item.attributes.values() if v)
    return f"{item.display}: {values}" if values else item.display


def cut(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[:max_chars - 1].rstrip(" ,;") + "…"


class ItemCards:
    """The catalog's cards, cut at `max_chars` characters; with `fit`, the user simulator's cards say whether the
    item fits what it wants."""

    def __init__(self, catalog: Catalog, max_chars: int = DEFAULT_MAX_CARD_CHARS, fit: bool = False):
        self.catalog, self.max_chars, self.fit = catalog, max_chars, fit

    @staticmethod
    def has_attributes(catalog: Catalog) -> bool:
        """Can a card say anything beyond the name? (A catalog of bare titles cannot.)"""
        return any(item.attributes for item in catalog)

    def card(self, item_id: str) -> str:
        item = self.catalog.get(item_id)
        return cut(card_text(item), self.max_chars) if item is not None else item_id

    def num_cut(self) -> int:
        """Catalog items whose card is longer than max_chars (reported once per run)."""
        return sum(len(card_text(item)) > self.max_chars for item in self.catalog)

    def note(self, item_ids: Sequence[str], wanted: Mapping[str, Sequence[str]] | None = None) -> str:
        """What follows a recommender message in the user simulator's view: one card per named item, each saying
        whether it fits `wanted` (the simulator's target attributes) when the cards are made with `fit`."""
        named = list(dict.fromkeys(item_ids))[:MAX_CARDS_PER_TURN]
        cards = [f"({self.card(i)}{self._fit(i, wanted)})" for i in named]
        return "\n\n" + "\n".join(cards) if cards else ""

    def _fit(self, item_id: str, wanted: Mapping[str, Sequence[str]] | None) -> str:
        item = self.catalog.get(item_id)
        if not self.fit or not wanted or item is None:
            return ""
        lacking = missing(item.attributes, wanted)
        if not lacking:
            return ". Fits what you want."
        return ". Lacks what you want: " + ", ".join(v for values in lacking.values() for v in values) + "."

    def labels(self, item_ids: Sequence[str]) -> list[str]:
        """The recommender's candidate list entries."""
        return [self.card(i) for i in item_ids]
