"""Reading LLM-REDIAL: one folder per domain (Movie, Books, ...), each read into the same Dialogue form.

A domain folder holds `item_map.json` (item id -> title), `final_data.jsonl` (per user: `history_interaction`,
`user_might_like` and `Conversation`, a list of {"conversation_N": {user_likes, user_dislikes, rec_item}}) and
`Conversation.txt` (a numeric conversation id line, then "User: ..." / "Agent: ..." lines). Pass a domain folder
or the folder above the domains (every domain is read, in name order).

  - the preference summary: the titles of `user_likes` and `user_dislikes` ("Likes: ...; dislikes: ...")
  - the target: `rec_item`; acceptance as in PEARL: the dialogue ends on the user's turn after the agent named it
  - target attributes: the target's catalog attributes when a catalog is given and the title matches
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from interplay.common.titles import mentions
from interplay.training.errors import TrainingInputError
from interplay.training.formats.redial import AttributesOf
from interplay.training.records import Dialogue, LoadStats, make_dialogue

CONVERSATIONS, META, ITEMS = "Conversation.txt", "final_data.jsonl", "item_map.json"
_LABEL = re.compile(r"^\s*(User|Agent)\s*:\s?(.*)$", re.IGNORECASE)
_OTHER_LABEL = re.compile(r"^\s*([A-Za-z]+)\s*:")


def domain_folders(path: Path) -> list[Path]:
    if (path / CONVERSATIONS).is_file():
        return [path]
    return sorted(p for p in path.iterdir() if (p / CONVERSATIONS).is_file())


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise TrainingInputError(f"{path} cannot be read: {e}") from None


def _conversation_meta(path: Path, stats: LoadStats) -> dict[str, dict[str, Any]]:
    """conversation id -> {user_likes, user_dislikes, rec_item}, from every user's `Conversation` list."""
    meta: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return meta
    with open(path, "rb") as f:
        for raw in f:
            try:
                user = json.loads(raw) if raw.strip() else None
            except (ValueError, UnicodeDecodeError):
                stats.repaired[f"unreadable {META} line"] += 1
                continue
            if isinstance(user, dict) and len(user) == 1 and "Conversation" not in user:
                user = next(iter(user.values()))  # {user_id: {...}}
            for entry in user.get("Conversation") or [] if isinstance(user, dict) else []:
                for key, value in entry.items() if isinstance(entry, dict) else []:
                    if isinstance(value, dict):
                        meta[key.rsplit("_", 1)[-1]] = value
    return meta


def _conversations(path: Path) -> Iterator[tuple[str, list[str]]]:
    """(conversation id, its lines): a line of digits alone starts the next conversation."""
    conv_id, lines = None, []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if line.isdigit():
                if conv_id is not None:
                    yield conv_id, lines
                conv_id, lines = line, []
            elif line and conv_id is not None:
                lines.append(line)
    if conv_id is not None:
        yield conv_id, lines


def _turns(lines: list[str]) -> list[tuple[str, str]] | str:
    turns: list[tuple[str, str]] = []
    for line in lines:
        match = _LABEL.match(line)
        if match is None:
            other = _OTHER_LABEL.match(line)
            if other and not turns:
                return f"unknown speaker {other.group(1)!r}"
            if not turns:
                return "turn without a speaker label"
            turns[-1] = (turns[-1][0], f"{turns[-1][1]}\n{line}")  # a reply over several lines
            continue
        speaker = "user" if match.group(1).lower() == "user" else "recommender"
        if turns and turns[-1][0] == speaker:
            turns[-1] = (speaker, f"{turns[-1][1]}\n{match.group(2).strip()}".strip())
        else:
            turns.append((speaker, match.group(2).strip()))
    return turns


def _titles(ids: Any, items: dict[str, str]) -> list[str]:
    ids = [ids] if isinstance(ids, str) else ids if isinstance(ids, list) else []
    return [items[str(i)] for i in ids if str(i) in items]


def _summary(meta: dict[str, Any], items: dict[str, str], target: str | None) -> str | None:
    likes = [t for t in _titles(meta.get("user_likes"), items) if t != target]
    dislikes = [t for t in _titles(meta.get("user_dislikes"), items) if t != target]
    parts = ([f"Likes: {', '.join(likes)}"] if likes else []) + ([f"dislikes: {', '.join(dislikes)}"]
                                                                if dislikes else [])
    return "; ".join(parts) + "." if parts else None


def llm_redial_records(path: Path, stats: LoadStats, attributes_of: AttributesOf | None = None,
                       ) -> Iterator[Dialogue | str]:
    folders = domain_folders(path)
    if not folders:
        raise TrainingInputError(f"{path}: no LLM-REDIAL domain folder (one holding {CONVERSATIONS})")
    for folder in folders:
        raw_items = _read_json(folder / ITEMS) if (folder / ITEMS).is_file() else {}
        items = {str(k): " ".join(v.split()) for k, v in raw_items.items() if isinstance(v, str)} \
            if isinstance(raw_items, dict) else {}
        meta = _conversation_meta(folder / META, stats)
        for conv_id, lines in _conversations(folder / CONVERSATIONS):
            turns = _turns(lines)
            if isinstance(turns, str):
                yield turns
                continue
            info = meta.get(conv_id, {})
            targets = _titles(info.get("rec_item"), items)
            target = targets[0] if len(targets) == 1 else None
            ending = None
            if target and turns and turns[-1][0] == "user" and any(
                    s == "recommender" and mentions(t, target) for s, t in turns[:-1]):
                ending = "accept"
            attributes = attributes_of(target) if target and attributes_of else None
            yield make_dialogue(f"{folder.name}/{conv_id}", turns, {}, ending, stats, target_item=target,
                                summary=_summary(info, items, target), attributes=attributes)
