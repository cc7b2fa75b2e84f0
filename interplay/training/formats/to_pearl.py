"""Writing a corpus row as a PEARL record (one element of a JSON array), in the released structure.

`dialogue` is the "Seeker: ..." / "Recommender: ..." lines; the ground truth is the held-out target (else the
accepted item) with `gt_genre`, `gt_director` and `gt_cast` from the target attributes, or else the catalog.
A generated dialogue has no reviews: `user_persona` holds the preference summary. The outcome, summary and full
target attributes also go in extra fields that PEARL's readers ignore and `interplay train` reads back.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from interplay.generator.inputs.catalog import Catalog
from interplay.training.formats.to_sharegpt import attributes_dict

NOT_KEPT = ("PEARL has reviews where a generated dialogue has a preference summary (user_persona holds the "
            "summary, seen_movie_titles is empty, gt_abstract has no synopsis) and no per-turn item ids")
_GT_FIELDS = (("gt_genre", ("genres", "genre")), ("gt_director", ("director", "directors")),
              ("gt_cast", ("cast", "actors")))


def pearl_record(row: dict[str, Any], catalog: Catalog, notes: Counter) -> dict[str, Any]:
    attrs = attributes_dict(row.get("target_attributes")) or {}
    target = row.get("target_item_id") or row.get("accepted_item_id")
    item = catalog.get(target) if target else None
    if target and item is None:
        notes["target items missing from the catalog (gt_movie_title holds the id)"] += 1
    known = {**(item.attributes if item else {}), **attrs}
    gt = {key: ", ".join(next((known[n] for n in names if known.get(n)), [])) for key, names in _GT_FIELDS}
    title = item.display if item else (target or "")
    abstract = (f"Title: {title}\nGenre: {gt['gt_genre']}\nDirector: {gt['gt_director']}\nCast: {gt['gt_cast']}\n"
                "Abstract: ")
    return {"data_id": row["conversation_index"], "user_persona": row.get("preference_summary") or "",
            "seen_movie_titles": [], "gt_abstract": abstract, "gt_movie_title": title, **gt,
            "dialogue": [f"{'Seeker' if m['role'] == 'user' else 'Recommender'}: {m['content']}"
                         for m in row["messages"] or []],
            # interplay's own fields
            "conversation_id": row["conversation_id"], "outcome": row["outcome"],
            "preference_summary": row.get("preference_summary"), "target_attributes": attrs or None}
