"""The dataset card: README.md beside a complete corpus, in the Hugging Face Hub's format, so that the Hub and
`datasets.load_dataset(DIR)` read the shards (and only the shards) and a reader learns what made them.

    write_card(storage, manifest)       a complete single run (runtime/run.py), or the combined manifest of a
                                        partitioned one with a partition's manifest as `detail` (interplay status)
    refresh_card(out_dir)               again from what the directory holds, e.g. after `interplay report`

Everything on the card comes from the manifest (for a partitioned run, also from a partition's manifest: the
identity, catalog and versions, which every partition shares) and, when `interplay report` has written
DIR/report/report.json, from its headline figures. The card is not part of the corpus: no resume reads it, it is
written only once the corpus is complete, after the writer has closed, and always whole (a temporary name moved
into place, never appended). A failure to write it is one warning line, never a failed run. A card that was
edited by hand since interplay wrote it (its last line, a digest of the rest, no longer matches) is overwritten,
with a line saying so.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from interplay.generator.output.layout import MANIFEST, PARTITION_MANIFEST_RE, read_json
from interplay.generator.output.storage import Storage, as_storage, tmp_target

CARD = "README.md"
REPORT_JSON = "report/report.json"  # where `interplay report DIR` writes its figures for a local corpus
_MARK = "<!-- interplay dataset card"
_DIGEST_RE = re.compile(rf"^{re.escape(_MARK)} ([0-9a-f]{{16}}):[^\n]*-->\n?\Z", re.MULTILINE)
# The Hub's size_categories, by number of rows.
SIZES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
         (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"))
TAGS = ["synthetic", "dialogue", "conversational-recommendation", "user-simulation", "interplay"]
PROTOCOLS = {
    "reference_free": "two LLMs talk: a user simulator conditioned on a preference summary and target attributes, "
                      "and a recommender; nothing of the held-out target reaches a prompt",
    "reference": "teacher dialogues: the user simulator is told whether each suggestion is the target, and the "
                 "recommender suggests from candidates that hold it",
    "single-llm": "the reference-dependent baseline: one LLM writes the whole dialogue, knowing the target",
}

Warn = Callable[[str], None]


def _stderr(line: str) -> None:
    print(f"interplay: {line}", file=sys.stderr)


def write_card(out_dir: str | Path | Storage, manifest: Mapping[str, Any], *,
               detail: Mapping[str, Any] | None = None, warn: Warn = _stderr) -> bool:
    """Write the card of a complete corpus; True if it was written. Never raises: a problem is one `warn` line."""
    storage = as_storage(out_dir)
    try:
        text = render_card(manifest, detail=detail, report=read_report(storage),
                           data_files="shard-*.parquet" if "partitions" not in manifest else "shard-p*.parquet",
                           name=storage.name)
        old = storage.read_bytes(CARD)
        if old is not None and is_hand_edited(old.decode("utf-8", "replace")):
            warn(f"{storage.path(CARD)} was edited by hand (or not written by interplay): overwritten with this "
                 "corpus's card")
        if old != text.encode():
            for name in storage.names():  # a card write killed half-way left its temporary file
                if tmp_target(name) == CARD:
                    storage.delete(name)
            storage.write_atomic(CARD, text.encode())
        return True
    except Exception as e:  # noqa: BLE001 (the corpus is complete and intact; only its card is missing)
        warn(f"warning: the dataset card {CARD} was not written ({type(e).__name__}: {e}); the corpus is complete "
             "and intact; `interplay status` writes the card again")
        return False


def remove_card(out_dir: str | Path | Storage, *, warn: Warn = _stderr) -> None:
    """--overwrite deleted the corpus the card describes: the card goes too (only interplay's own card)."""
    storage = as_storage(out_dir)
    try:
        old = storage.read_bytes(CARD)
        if old is not None and is_card(old):
            storage.delete(CARD)
    except Exception as e:  # noqa: BLE001
        warn(f"warning: the old dataset card {storage.path(CARD)} could not be removed ({e}); the next complete "
             "run overwrites it")


def refresh_card(out_dir: str | Path | Storage, *, warn: Warn = _stderr) -> bool:
    """Write the card again from the directory's manifest.json (a complete corpus only), with the report's
    figures if one has been run since."""
    storage = as_storage(out_dir)
    try:
        manifest = read_json(storage, MANIFEST)
    except Exception as e:  # noqa: BLE001
        warn(f"warning: the dataset card was not written ({e})")
        return False
    if manifest is None or manifest.get("status") != "complete":
        return False
    detail = None
    if "partitions" in manifest:
        names = [n for n in storage.names() if PARTITION_MANIFEST_RE.match(n)]
        detail = read_json(storage, names[0]) if names else None
    return write_card(storage, manifest, detail=detail, warn=warn)


def is_card(data: bytes | None) -> bool:
    """Did interplay write this README.md (edited by hand since, or not)?"""
    return data is not None and _MARK.encode() in data


def is_hand_edited(text: str) -> bool:
    """Not interplay's card as it wrote it: no digest line, or one that no longer matches the text above it."""
    match = _DIGEST_RE.search(text)
    return match is None or _digest(text[:match.start()]) != match.group(1)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_report(storage: Storage) -> dict[str, Any] | None:
    """This corpus's entry in DIR/report/report.json (`interplay report DIR`), or None if there is none."""
    try:
        data = storage.read_bytes(REPORT_JSON)
        corpora = json.loads(data)["corpora"] if data is not None else []
    except (OSError, ValueError, KeyError, TypeError):
        return None
    here = storage.local_path()
    for corpus in corpora:  # several when `--output DIR/report` compared corpora: this directory's
        if here is not None and Path(str(corpus.get("path", ""))).resolve() == here.resolve():
            return corpus
    return corpora[0] if len(corpora) == 1 else None


# -- the card's text --------------------------------------------------------------------------------------------

def render_card(manifest: Mapping[str, Any], *, detail: Mapping[str, Any] | None = None,
                report: Mapping[str, Any] | None = None, data_files: str = "shard-*.parquet",
                name: str = "corpus") -> str:
    """The whole README.md: the YAML header, the body, and the digest line that tells a hand edit."""
    m = {**(detail or {}), **manifest}  # a combined manifest's totals and runs; a partition's identity and inputs
    config = m.get("config") or {}
    totals = m.get("totals") or {}
    num = int(totals.get("num_dialogues") or 0)
    header = {
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": data_files}]}],
        "license": config.get("license") or "unknown",
        "task_categories": ["text-generation"],
        "language": ["en"],
        "size_categories": [next((s for limit, s in SIZES if num < limit), "n>1B")],
        "tags": TAGS,
        "pretty_name": f"interplay corpus {name}",
    }
    body = "\n".join([
        f"# {name}", "",
        f"Synthetic conversational-recommendation dialogues made by interplay: {num} dialogues in "
        f"{m.get('num_shards', '?')} Parquet shards (`{data_files}`, one row per dialogue, split `train`). "
        "`messages` holds the dialogue as chat messages (`user`: the simulated user, `assistant`: the "
        "recommender); every column is described in interplay's docs/output.md. `manifest.json` beside the "
        "shards records all that follows.", "",
        *_outcomes(totals, num), "",
        *_making(m, config), "",
        *_figures(report, num), "",
        *_command(m), "",
        f"License: {config.get('license') or 'not given (set `license:` in the config)'}.", "",
    ])
    text = f"---\n{yaml.safe_dump(header, sort_keys=False)}---\n\n{body}"
    return f"{text}{_MARK} {_digest(text)}: written by interplay; a hand edit is overwritten by the next run -->\n"


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _outcomes(totals: Mapping[str, Any], num: int) -> list[str]:
    lines = ["## Outcomes", "", "| outcome | dialogues | share |", "|---|---:|---:|"]
    for outcome, count in sorted((totals.get("outcomes") or {}).items(), key=lambda kv: -kv[1]):
        lines.append(f"| {outcome} | {count} | {count / num:.1%} |" if num else f"| {outcome} | {count} | |")
    tokens = totals.get("tokens") or {}
    cached = totals.get("cached_prompt_share") or {}
    if tokens:
        lines += ["", "Tokens: " + "; ".join(
            f"{role} {t.get('output', 0)} output, {t.get('prompt', 0)} prompt ({cached.get(role, 0):.0%} served "
            "from the prefix cache)" for role, t in tokens.items()) + "."]
    return lines


def _role_engine(config: Mapping[str, Any], role: str) -> dict[str, Any]:
    return {**(config.get("engine") or {}), **((config.get(role) or {}).get("engine") or {})}


def _making(m: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    from interplay.generator.config import DEFAULT_NUM_CANDIDATES, DEFAULT_SAMPLING

    identity = m.get("identity") or {}
    mode = m.get("mode") or config.get("protocol") or "?"
    lines = ["## How it was made", "",
             f"- Protocol: `{config.get('protocol', '?')}`" + (f", mode `{m['mode']}`" if m.get("mode") else "")
             + (f": {PROTOCOLS[mode]}." if mode in PROTOCOLS else "."),
             "", "| role | model | fingerprint | adapter | adapter fingerprint | sampling |",
             "|---|---|---|---|---|---|"]
    for role in ("user", "recommender"):
        section = config.get(role) or {}
        sampling = {**DEFAULT_SAMPLING, **(section.get("sampling") or {})}
        lines.append(f"| {role} | {_cell(_role_engine(config, role).get('model', '?'))} | "
                     f"{_cell(identity.get(f'model.{role}', '?'))} | {_cell(section.get('adapter') or '-')} | "
                     f"{_cell(identity.get(f'adapter.{role}') or '-')} | `{_cell(json.dumps(sampling))}` |")
    seeds, catalog = m.get("seeds") or {}, m.get("catalog") or {}
    source = (config.get("seeds") or {}).get("source", "?")
    conversation = config.get("conversation") or {}
    versions = m.get("versions") or {}
    k = (config.get("recommender") or {}).get("num_candidates")
    k = DEFAULT_NUM_CANDIDATES.get(config.get("protocol"), "?") if k is None else k
    lines += [
        "",
        f"- Conversations: at most {conversation.get('max_turns', '?')} turns, both roles; the recommender is "
        + (f"shown {k} catalog candidates before each turn" if k else "shown no catalog candidates")
        + f"; the item noun is `{conversation.get('item_noun', '?')}`.",
        f"- Seeds: run seed {config.get('seed', '?')}, sampling seeds `{config.get('sampling_seeds', '?')}`; "
        f"seed source `{source}`: {seeds.get('path', '?')} (sha256 {seeds.get('sha256', '?')}), "
        f"{seeds.get('num_valid', '?')} usable of {seeds.get('num_rows', '?')} rows"
        + (", skipped: " + ", ".join(f"{why} {n}" for why, n in seeds["skipped"].items())
           if isinstance(seeds.get("skipped"), dict) and seeds["skipped"] else "") + ".",
        f"- Catalog: {catalog.get('path', '?')} (sha256 {catalog.get('sha256', '?')}), "
        f"{catalog.get('num_items', '?')} items.",
        f"- Identity: hash `{m.get('config_hash', '?')}` (config {identity.get('config', '?')}, prompts "
        f"{identity.get('prompts', '?')}); interplay {versions.get('interplay', '?')}, vLLM "
        f"{versions.get('vllm', '?')}; {_runs(manifest_runs(m))}"
        + (f", {len(m['partitions'])} partitions" if isinstance(m.get("partitions"), dict) else "") + ".",
    ]
    return lines


def manifest_runs(m: Mapping[str, Any]) -> int:
    """Runs that wrote the corpus: a combined manifest lists every partition's (the last 100 of each)."""
    runs = len(m.get("runs") or [])
    return runs if isinstance(m.get("partitions"), dict) else int(m.get("num_runs", runs))


def _runs(num: int) -> str:
    return f"{num} run" + ("" if num == 1 else "s")


def _figures(report: Mapping[str, Any] | None, num: int) -> list[str]:
    lines = ["## Quality figures", ""]
    headline = (report or {}).get("headline")
    if not headline:
        return [*lines, "No `interplay report` has been run on this directory yet; run it, then "
                "`interplay status` on the directory, and they appear here (docs/report.md defines each)."]
    measured = ((report or {}).get("metrics") or {}).get("num_dialogues")
    if measured is not None and measured != num:
        lines += [f"Measured on {measured} dialogues; the corpus now holds {num}: rerun `interplay report`.", ""]
    lines += ["From `interplay report` (report/report.json; docs/report.md defines each):", "",
              "| figure | value |", "|---|---:|"]
    for key, value in headline.items():
        if key.endswith("_ci95"):
            continue
        interval = headline.get(f"{key}_ci95")
        shown = "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
        if interval and None not in interval:
            shown += f" (95% CI {interval[0]:.3f}-{interval[1]:.3f})"
        lines.append(f"| {key} | {shown} |")
    return lines


def _command(m: Mapping[str, Any]) -> list[str]:
    recorded = []
    for run in m.get("runs") or []:  # a partitioned run's: one per partition, the index generalised
        command = run.get("command")
        if command:
            command = re.sub(r"--partition-index \d+", "--partition-index I", command)
            recorded = [c for c in recorded if c != command] + [command]
    lines = ["## How to make it again", ""]
    if recorded:
        partitioned = "--partition-index I" in recorded[-1]
        lines += ["The command that made it; rerun, it resumes the corpus"
                  + (" (one process per partition, `I` from 0 to N-1)" if partitioned else "") + ":",
                  "", "```bash", recorded[-1], "```"]
    else:
        lines += ["The command was not recorded (a run started from Python or by Ray workers, or by an earlier "
                  "interplay). With manifest.json's `config` saved as config.yaml:", "", "```bash",
                  f"interplay generate --config config.yaml --output OUT --num-dialogues {m.get('num_dialogues')}",
                  "```"]
    return lines + ["", "The same config, models, adapters, seeds and catalog give the same corpus identity; "
                        "vLLM's sampling decides the exact text."]

