"""`interplay export CORPUS --format redial|sharegpt|pearl --output FILE`: a corpus in a CRS dataset's own format.

    interplay export out/embedded --format redial --output exports/redial.jsonl     # ReDial's JSONL
    interplay export out/embedded --format sharegpt --output exports/sharegpt.jsonl # LLaMA-Factory / axolotl
    interplay export out/embedded --format pearl --output exports/pearl.json        # PEARL's JSON array
    interplay export out/embedded --format sharegpt --output exports/sharegpt.jsonl --dedup  # exact duplicates out

Shards are streamed, so a corpus of any size fits. Titles come from the corpus's catalog (the path its manifest
records, or --catalog). What a format cannot hold is said once, on stderr. Every exported file reads back through
`interplay train --data`. The writers live in interplay/training/formats/to_*.py. --dedup keeps the first dialogue
of each group with the same whole text (interplay.report.duplicates.whole_text_key: every turn's role and
normalised text) and counts the others; it holds one 64-bit hash per distinct dialogue in memory.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from interplay.generator.output.writer import OutputError, read_manifest, shard_files
from interplay.report.duplicates import whole_text_key
from interplay.training.config import DEFAULT_OUTCOMES
from interplay.training.formats import to_pearl, to_redial, to_sharegpt

HELP = "write a corpus as ReDial, ShareGPT or PEARL data for CRS training"
WRITERS = {"redial": to_redial, "sharegpt": to_sharegpt, "pearl": to_pearl}
RECORD = {"redial": to_redial.redial_record, "sharegpt": to_sharegpt.sharegpt_record, "pearl": to_pearl.pearl_record}
NEEDS_CATALOG = ("redial", "pearl")  # titles of grounded items
COLUMNS = ["conversation_id", "conversation_index", "messages", "turns", "outcome", "accepted_item_id",
           "target_item_id", "preference_summary", "target_attributes"]


def corpus_rows(corpus: Path) -> Iterator[dict[str, Any]]:
    for path in sorted(shard_files(corpus)):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024, columns=COLUMNS):
            yield from batch.to_pylist()


def load_catalog(corpus: Path, manifest: dict[str, Any], override: str | None) -> Any:
    from interplay.generator.inputs.catalog import Catalog, CatalogError

    path = override or (manifest.get("catalog") or {}).get("path")
    if not path:
        raise CatalogError(f"{corpus}/manifest.json records no catalog; pass --catalog")
    return Catalog.load(Path(path).expanduser())


def export(corpus: Path, fmt: str, output: Path, *, outcomes: list[str] | None, catalog_path: str | None,
           dedup: bool = False) -> tuple[Counter, Counter, Counter, int]:
    """Write the file; returns (written by outcome, left out by outcome, notes on what did not fit, exact duplicates
    dropped). Duplicates are looked for among the dialogues the outcomes let through, in shard order."""
    manifest = read_manifest(corpus)
    if manifest is None:
        raise OutputError(f"{corpus} holds no manifest.json: not an interplay output directory")
    catalog = load_catalog(corpus, manifest, catalog_path) if fmt in NEEDS_CATALOG else None
    written, left_out, notes = Counter(), Counter(), Counter()
    seen: set[int] = set()  # whole-text keys of the dialogues written (--dedup)
    num_duplicates = 0
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")  # renamed into place once complete
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("[\n" if fmt == "pearl" else "")
        for row in corpus_rows(corpus):
            if outcomes is not None and row["outcome"] not in outcomes:
                left_out[row["outcome"]] += 1
                continue
            if dedup and (key := whole_text_key(row["turns"] or [])) is not None:
                if key in seen:
                    num_duplicates += 1
                    continue
                seen.add(key)
            line = json.dumps(RECORD[fmt](row, catalog, notes), ensure_ascii=False)
            f.write((",\n" if fmt == "pearl" and sum(written.values()) else "") + line
                    + ("" if fmt == "pearl" else "\n"))
            written[row["outcome"]] += 1
        f.write("\n]\n" if fmt == "pearl" else "")
    os.replace(tmp, output)
    return written, left_out, notes, num_duplicates


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("corpus", help="output directory of a run")
    parser.add_argument("--format", required=True, choices=list(WRITERS), help="the dataset format to write")
    parser.add_argument("--output", required=True, help="the file to write (JSONL; a JSON array for pearl)")
    parser.add_argument("--outcome", action="append", metavar="OUTCOME",
                        help="export dialogues with this outcome (repeatable; default: "
                             f"{', '.join(DEFAULT_OUTCOMES)}; `all` for every one)")
    parser.add_argument("--catalog", help="catalog for titles (default: the one the corpus manifest records)")
    parser.add_argument("--dedup", action="store_true",
                        help="drop all but the first of each group of dialogues with the same whole text "
                             "(casefolded, whitespace collapsed, trailing punctuation removed) and say how many went")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")


def main(args: argparse.Namespace) -> int:
    output = Path(args.output)
    if output.exists() and not args.overwrite:
        raise OutputError(f"{output} already exists; pass --overwrite to replace it")
    outcomes = None if args.outcome and "all" in args.outcome else (args.outcome or list(DEFAULT_OUTCOMES))
    print(f"interplay: {args.format}: {WRITERS[args.format].NOT_KEPT}", file=sys.stderr)
    written, left_out, notes, num_duplicates = export(Path(args.corpus), args.format, output, outcomes=outcomes,
                                                      catalog_path=args.catalog, dedup=args.dedup)
    for note, n in notes.items():
        if n:
            print(f"interplay: {args.format}: {note}: {n}", file=sys.stderr)
    by_outcome = ", ".join(f"{o} {n}" for o, n in written.most_common())
    print(f"wrote {output}: {sum(written.values())} dialogues ({by_outcome or 'none'})"
          + (f"; left out {', '.join(f'{o} {n}' for o, n in left_out.most_common())}" if left_out else "")
          + (f"; dropped {num_duplicates} exact duplicates (whole text)" if args.dedup else ""))
    return 0
