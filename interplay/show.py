"""`interplay show DIR`: print a few dialogues of a corpus, readably."""

from __future__ import annotations

import argparse
import textwrap

from interplay.generator.output.writer import (
    PARTITION_MANIFEST_RE,
    OutputError,
    as_storage,
    read_manifest,
    shard_names,
)

HELP = "print a few dialogues of a corpus"

COLUMNS = ["conversation_id", "protocol", "outcome", "error", "turns", "preference_summary", "target_attributes",
           "target_item_id", "accepted_item_id", "target_rank"]


def _attributes(value: list[dict]) -> str:
    return "; ".join(f"{a['name']}: {', '.join(a['values'])}" for a in value or [])


class _Titles:
    """item id -> "Title (Year)" from the run's catalog, read when first needed (only a corpus whose recommender
    was shown candidates needs it); ids stand for themselves when the catalog is gone."""

    def __init__(self, manifest: dict):
        self.path = (manifest.get("catalog") or {}).get("path")
        self._titles: dict[str, str] | None = None

    def names(self, item_ids: list[str]) -> str:
        if self._titles is None:
            from interplay.generator.inputs.catalog import Catalog, CatalogError

            try:
                self._titles = {item.item_id: item.display for item in Catalog.load(self.path)} if self.path else {}
            except CatalogError:
                self._titles = {}
        return "; ".join(self._titles.get(i, i) for i in item_ids)


def show(out_dir: str, *, num: int = 3, outcome: str | None = None) -> None:
    """`out_dir`: a local path or a URI, a single run or a partitioned one (manifest-p*.json)."""
    storage = as_storage(out_dir)
    partitions = [n for n in storage.names() if PARTITION_MANIFEST_RE.match(n)]
    manifest = read_manifest(storage) or (read_manifest(storage, partitions[0]) if partitions else None)
    if manifest is None:
        raise OutputError(f"{out_dir} holds no manifest.json: not an interplay output directory")
    if num <= 0:
        return
    titles, shown = _Titles(manifest), 0
    for name in shard_names(storage):
        table = storage.read_table(name)  # older corpora lack the newer columns (protocol)
        for row in table.select([c for c in COLUMNS if c in table.column_names]).to_pylist():
            if outcome and row["outcome"] != outcome:
                continue
            protocol = f"  protocol: {row['protocol']}" if row.get("protocol") else ""
            print(f"=== {row['conversation_id']}  outcome: {row['outcome']}"
                  + (f" ({row['error']})" if row["error"] else "") + protocol)
            print(textwrap.fill(f"preference summary: {row['preference_summary']}", 110,
                                subsequent_indent="    "))
            print(f"target attributes: {_attributes(row['target_attributes'])}   held-out target: "
                  f"{row['target_item_id']}   accepted: {row['accepted_item_id']}   "
                  f"target rank: {row['target_rank']}")
            for turn in row["turns"]:
                if turn.get("candidate_item_ids"):
                    print(textwrap.fill(f"  (shown to the recommender: {titles.names(turn['candidate_item_ids'])})",
                                        110, subsequent_indent="    "))
                label = "USER" if turn["role"] == "user" else "RECOMMENDER"
                items = f"   -> items {turn['item_ids']}" if turn["item_ids"] else ""
                print(textwrap.fill(f"{label}: {turn['text']}", 110, subsequent_indent="    ") + items)
            print()
            shown += 1
            if shown >= num:
                return
    if shown == 0:
        print("no dialogues" + (f" with outcome {outcome!r}" if outcome else ""))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", help="output directory of a run")
    parser.add_argument("-n", "--num", type=int, default=3, help="how many dialogues")
    parser.add_argument("--outcome", help="only dialogues with this outcome (accepted, max_turns, ...)")


def main(args: argparse.Namespace) -> int:
    show(args.output, num=args.num, outcome=args.outcome)
    return 0
