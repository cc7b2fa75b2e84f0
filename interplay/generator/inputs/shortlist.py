"""The teacher's shortlist (protocol: reference): the target and k-1 distractors, as PEARL's recommender gets.

A distractor shares some, not all, of the target's attribute values (a drama from another decade, a 1990s comedy
for a 1990s romantic comedy), so it is plausible but not the answer. Distractors come from the most popular items that share an
attribute value with the target (catalog order), sampled and shuffled with a generator seeded by the run seed and
the conversation id: the same conversation gets the same shortlist on every run. Where too few items share an
attribute, the catalog's first items fill in.
"""

from __future__ import annotations

import random

from interplay.generator.inputs.catalog import Catalog

POOL_PER_VALUE = 200  # popular items per attribute value that may become distractors


def _values(attributes: dict[str, list[str]]) -> frozenset[tuple[str, str]]:
    """An item's (attribute name, value) pairs, values casefolded."""
    return frozenset((name, v.casefold()) for name, values in attributes.items() for v in values)


class Shortlist:
    def __init__(self, catalog: Catalog, size: int, run_seed: int):
        self.catalog, self.size, self.run_seed = catalog, size, run_seed
        self._values = {item.item_id: _values(item.attributes) for item in catalog}
        # (attribute name, value) -> item ids in catalog order, the first POOL_PER_VALUE of them.
        self._by_value: dict[tuple[str, str], list[str]] = {}
        for item_id, pairs in self._values.items():
            for pair in pairs:
                ids = self._by_value.setdefault(pair, [])
                if len(ids) < POOL_PER_VALUE:
                    ids.append(item_id)

    def for_conversation(self, conversation_id: str, target_id: str) -> list[str]:
        """The target and its distractors, shuffled; the same for the same run seed and conversation."""
        wanted = self._values.get(target_id, frozenset())
        pool: dict[str, None] = {}
        for pair in sorted(wanted):
            for item_id in self._by_value.get(pair, ()):
                # Counted per attribute value: [Comedy, Romance] + 1990s is matched in part by a 1990s comedy.
                if item_id != target_id and 0 < len(wanted & self._values[item_id]) < len(wanted):
                    pool[item_id] = None
        rng = random.Random(f"{self.run_seed}:{conversation_id}:shortlist")
        num = self.size - 1
        chosen = rng.sample(sorted(pool), min(num, len(pool)))
        for item in self.catalog:  # a target with few neighbours: popular items fill the list
            if len(chosen) >= num:
                break
            if item.item_id != target_id and item.item_id not in chosen:
                chosen.append(item.item_id)
        items = [target_id, *chosen]
        rng.shuffle(items)
        return items
