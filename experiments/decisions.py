"""What the user simulator did after each offer, split three ways: does the offered item fit its target attributes,
how does its reply open (the teacher's glad words, its rejection phrases, or neither), and did it write the
accept marker. It shows whether a wrong acceptance was a wrong decision or a right one with the wrong marker.

    python -m experiments.decisions out/reproduce/corpora/trained [more corpora] [--catalog CATALOG]

An offer is a recommender turn that grounds exactly one item and that a user turn answers (interplay report's
definition, docs/report.md). The openings are those the teacher protocol writes (interplay/generator/dialogue/
teacher.py), so the split reads a simulator trained on that teacher. Prints one table per corpus.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from interplay.common.attributes import fits
from interplay.generator.dialogue import teacher
from interplay.report.cli import catalog_path, iter_rows, load_items
from interplay.report.decisions import distinct_items
from interplay.report.task import attributes_dict

GLAD = re.compile(rf"^\W*{teacher._GLAD}\b")
# A rejection's opening words: its template up to the first punctuation ("Not quite", "Hmm", "No thanks").
REJECTING = re.compile("^(" + "|".join(re.escape(re.split(r"[,.:]", t)[0]) for t in teacher.REJECTION_TEMPLATES) + ")")
MARKER = re.compile(r"\[ACCEPT\]", re.IGNORECASE)


def opening(text: str) -> str:
    body = MARKER.sub("", text).strip()
    return "glad" if GLAD.match(body) else "rejecting" if REJECTING.match(body) else "other"


def offers(rows: Iterable[Mapping[str, Any]], items: Mapping[str, Any]) -> Counter:
    """(fits, opening, wrote the marker) -> offers."""
    out: Counter = Counter()
    for row in rows:
        target = attributes_dict(row["target_attributes"])
        turns = row["turns"]
        for k, turn in enumerate(turns[:-1]):
            ids = distinct_items(turn)
            if turn["role"] != "recommender" or len(ids) != 1 or ids[0] not in items:
                continue
            reply = turns[k + 1].get("raw_text") or turns[k + 1]["text"]
            out[(fits(items[ids[0]][1], target), opening(reply), bool(MARKER.search(reply)))] += 1
    return out


def table(counts: Counter) -> list[str]:
    lines = ["| offer | opening | marker | offers |", "|---|---|---|---|"]
    for (fit, how, marker), n in sorted(counts.items(), key=lambda kv: (not kv[0][0], kv[0][1], not kv[0][2])):
        lines.append(f"| {'fits' if fit else 'does not fit'} | {how} | {'yes' if marker else 'no'} | {n} |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.decisions", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpora", nargs="+", type=Path)
    parser.add_argument("--catalog", help="catalog file (default: the one the run used)")
    args = parser.parse_args(argv)
    for corpus in args.corpora:
        manifest_file = corpus / "manifest.json"
        if not manifest_file.is_file():
            print(f"decisions: error: {corpus} is not a corpus (no manifest.json)", file=sys.stderr)
            return 2
        items = load_items(catalog_path(json.loads(manifest_file.read_text()), args.catalog))
        if items is None:
            print(f"decisions: error: no catalog for {corpus}; give --catalog", file=sys.stderr)
            return 2
        print(f"\n{corpus}\n")
        print("\n".join(table(offers(iter_rows(corpus, ["turns", "target_attributes"]), items))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
