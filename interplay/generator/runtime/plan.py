"""The run's deterministic order of conversations, streamed from the seed file.

Conversation i uses valid seed i mod S (S = number of valid seeds), so `--num-dialogues N` always means the same
first N conversations. A seed used again on a later pass gets its own conversation id (`<seed_id>#<pass>`).
Conversations already in finished shards are skipped without building them.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterator
from pathlib import Path

from interplay.generator.dialogue.conversation import Conversation
from interplay.generator.inputs.seeds import iter_seeds


def conversation_id(seed_id: str, pass_index: int) -> str:
    return seed_id if pass_index == 0 else f"{seed_id}#{pass_index}"


def iter_plan(seeds_path: str | Path, *, num_valid: int, num_dialogues: int, done: Container[int],
              max_summary_chars: int = 4000, owns: Callable[[str], bool] | None = None,
              known_items: Container[str] | None = None, require_target: bool = False,
              duplicate_rows: Container[int] | None = None) -> Iterator[Conversation]:
    """The conversations still to generate, in order; `owns(seed_id)` keeps one partition's share of them.
    `max_summary_chars`, `known_items` and `require_target` must be those the seeds were scanned with, and
    `duplicate_rows` that scan's (see seeds.scan_seeds)."""
    index = 0
    pass_index = 0
    while index < num_dialogues:
        # Skip a whole pass without reading the file when every conversation in it is done.
        if all(i in done for i in range(index, min(index + num_valid, num_dialogues))):
            index += num_valid
            pass_index += 1
            continue
        for seed in iter_seeds(seeds_path, max_summary_chars=max_summary_chars, known_items=known_items,
                               require_target=require_target, duplicate_rows=duplicate_rows):
            if index >= num_dialogues:
                return
            if index not in done and (owns is None or owns(seed.seed_id)):
                yield Conversation(conversation_id(seed.seed_id, pass_index), index, seed)
            index += 1
        pass_index += 1


def count_planned(seeds_path: str | Path, *, num_valid: int, num_dialogues: int, max_summary_chars: int = 4000,
                  owns: Callable[[str], bool] | None = None, known_items: Container[str] | None = None,
                  require_target: bool = False) -> int:
    """How many of the first `num_dialogues` conversations a partition owns (all of them without `owns`)."""
    if owns is None:
        return num_dialogues
    return sum(1 for _ in iter_plan(seeds_path, num_valid=num_valid, num_dialogues=num_dialogues, done=(),
                                    max_summary_chars=max_summary_chars, owns=owns, known_items=known_items,
                                    require_target=require_target))
