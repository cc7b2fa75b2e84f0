"""The teacher's shortlist (protocol: reference): the target and k-1 distractors, in the order they are suggested.

A distractor shares an attribute value with the target (a drama from another decade, a 1990s comedy for a 1990s
romance), so it is plausible, but it does not fit the target attributes by the attribute rule
(interplay.common.attributes): some wanted attribute has none of its wanted values. Every rejection of a
distractor then has a reason the user simulator can say, and what the simulators learn from the teacher is the
rule itself: accept what fits, say what is missing from what does not.

The target is not always first: it is suggested at a position drawn from TARGET_POSITIONS, after that many
distractors, so most teacher dialogues reject before they accept; a dialogue whose max_turns leaves room for
fewer suggestions gets the target sooner, except when it is drawn last: then every suggestion is rejected. Distractors come from the most popular items that share a value with
the target (catalog order), sampled with a generator seeded by the run seed and the conversation id: the same
conversation gets the same shortlist on every run. Where too few items qualify, the catalog's first items that
do not fit fill in, then any.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from interplay.common.attributes import num_met, value_pairs, wanted_values
from interplay.generator.inputs.catalog import Catalog

POOL_PER_VALUE = 200  # popular items per attribute value that may become distractors
# 1-based position of the target among the suggestions -> weight. 0: last, after every distractor, which a
# dialogue of 8 turns never reaches: it rejects every suggestion. 80% of dialogues reject before they accept or
# end, and no position always accepts, so what tells a simulator trained on them to accept is the card alone.
TARGET_POSITIONS = {1: 0.2, 2: 0.3, 3: 0.3, 0: 0.2}


class Shortlist:
    def __init__(self, catalog: Catalog, size: int, run_seed: int, max_suggestions: int | None = None):
        self.catalog, self.size, self.run_seed = catalog, size, run_seed
        self.max_suggestions = max_suggestions  # recommender turns a dialogue has room for (None: no limit)
        self._values = {item.item_id: value_pairs(item.attributes) for item in catalog}
        # (attribute name, value) -> item ids in catalog order, the first POOL_PER_VALUE of them.
        self._by_value: dict[tuple[str, str], list[str]] = {}
        for item_id, pairs in self._values.items():
            for pair in pairs:
                ids = self._by_value.setdefault(pair, [])
                if len(ids) < POOL_PER_VALUE:
                    ids.append(item_id)

    def for_conversation(self, conversation_id: str, target_id: str,
                         target_attributes: Mapping[str, Sequence[str]] | None = None) -> list[str]:
        """The shortlist in suggestion order: distractors, the target at its drawn position, more distractors.
        `target_attributes` (default: the target item's own) decide which items do not fit."""
        target_item = self.catalog.get(target_id)
        wanted_attrs = target_attributes or (target_item.attributes if target_item else {})
        wanted = wanted_values(wanted_attrs)  # once per call: every pool item is tested against it

        def misfits(item_id: str) -> bool:  # the attribute rule (common/attributes.py) on precomputed pairs
            return not wanted or num_met(self._values[item_id], wanted) < len(wanted)

        shared = self._values.get(target_id, frozenset()) | value_pairs(wanted_attrs)
        pool: dict[str, None] = {}
        for pair in sorted(shared):
            for item_id in self._by_value.get(pair, ()):
                if item_id != target_id and misfits(item_id):
                    pool[item_id] = None
        rng = random.Random(f"{self.run_seed}:{conversation_id}:shortlist")
        num = self.size - 1
        chosen = rng.sample(sorted(pool), min(num, len(pool)))
        for strict in (True, False):  # a target with few neighbours: popular misfits fill the list, then any
            for item in self.catalog:
                if len(chosen) >= num:
                    break
                if item.item_id != target_id and item.item_id not in chosen and (
                        not strict or misfits(item.item_id)):
                    chosen.append(item.item_id)
        positions, weights = zip(*TARGET_POSITIONS.items())
        position = rng.choices(positions, weights)[0]
        if position and self.max_suggestions is not None:
            position = min(position, max(self.max_suggestions, 1))
        position = min(position or len(chosen) + 1, len(chosen) + 1)
        return [*chosen[:position - 1], target_id, *chosen[position - 1:]]
