"""`interplay summarize`: preference summaries and target attributes for dialogues that lack them, in batch.

    interplay summarize --data pearl/train.json --config configs/embedded.yaml --output data/pearl-summarized

The user simulator is conditioned on a preference summary and target attributes. PEARL has personas made of
reviews instead (and its target attributes from gt_genre, gt_director, gt_cast: only the summary is written
then), ReDial and LLM-REDIAL may have nothing but the dialogue. For each dialogue without them, the model of the
given generation config (its `engine` section, served by the generator's own engine layer) writes:
  - a preference summary, from the persona's reviews and the titles they review (or, without a persona, from what
    the user says);
  - target attributes, from what the user asks for in the dialogue (and the ground-truth movie, if known), as
    `name: value, value` lines. The target title, with or without its year, is kept out of both: the simulator
    must not know it.
The input is streamed and summarized in parts (--part-size dialogues, all of a part's requests in flight at once,
up to the config's max_in_flight); each part is written as soon as it is done (summary_output.py), so a crash
loses at most one part and a rerun resumes. The output is a directory of Parquet files in the `messages` format
that `interplay train` reads. Dialogues that already have both are copied as they are.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from interplay.common.titles import mentions
from interplay.generator.runtime.scheduler import EngineDead
from interplay.logs import engine_logs_to
from interplay.training.config import FORMATS
from interplay.training.data import iter_dialogues
from interplay.training.errors import TrainingInputError
from interplay.training.records import Dialogue, LoadStats
from interplay.training.summary_output import SummaryOutput

HELP = "write preference summaries and target attributes for dialogues without them (e.g. PEARL personas)"
# Low temperature: a summary should say what the evidence says. Overridable with --set user.sampling.KEY=VALUE.
SAMPLING = {"temperature": 0.2, "top_p": 0.95, "max_tokens": 160}
MAX_ATTRIBUTES, MAX_VALUES = 6, 6

SYSTEM = "You write short, factual notes about a person's taste in {item}s. You answer with the notes only."
SUMMARY_FROM_PERSONA = """\
Here is what a person wrote about {item}s they know:

{evidence}

In two or three sentences, note which {item}s and which kinds of {item}s this person loves and dislikes, and \
why. Write notes like "Loves ...; dislikes ...". Answer with the notes only."""
SUMMARY_FROM_TURNS = """\
Here is what a person said while asking for a {item} recommendation:

{evidence}

In one or two sentences, note what this person likes and dislikes in {item}s. Write notes like \
"Loves ...; dislikes ...". Answer with the notes only."""
ATTRIBUTES = """\
Here is what a person said while asking for a {item} recommendation:

{evidence}
{target}
List what they were looking for, one line per attribute, written as `name: value, value`, with names such as \
genres, mood, era, themes. Do not name any {item} title."""

_ATTR_LINE = re.compile(r"^\s*(?:[-*\d.)]+\s*)?\**([A-Za-z][A-Za-z /_-]{0,30}?)\**\s*:\s*(.+)$")


def _user_lines(d: Dialogue) -> str:
    return "\n".join(f"- {text}" for speaker, text in d.turns if speaker == "user" and text)


def _leaks(text: str, title: str | None) -> bool:
    # Any spelling of the title, with or without its year ("Heat (1995)" is named by "heat").
    return bool(title) and mentions(text, title)


def clean_summary(text: str, target: str | None) -> str | None:
    """The model's summary, without sentences that name the target (the simulator must not know it)."""
    sentences = re.split(r"(?<=[.!?])\s+", text.strip().replace("\n", " "))
    kept = " ".join(s for s in sentences if s and not _leaks(s, target)).strip()
    return kept or None


def parse_attributes(text: str, target: str | None) -> dict[str, list[str]] | None:
    """`name: value, value` lines into attributes; free text becomes {"wants": [text]}; the target is dropped."""
    attrs: dict[str, list[str]] = {}
    for line in text.splitlines():
        match = _ATTR_LINE.match(line)
        if not match or len(attrs) >= MAX_ATTRIBUTES:
            continue
        values = [v.strip(" .*`\"'") for v in re.split(r"[,;]", match.group(2))]
        values = [v for v in values if v and v.lower() not in ("none", "n/a", "any") and not _leaks(v, target)]
        if values:
            attrs.setdefault(match.group(1).strip().lower(), []).extend(values[:MAX_VALUES])
    if not attrs:
        # a line that ends with a colon is a preamble ("Here is the list:"), not an answer
        first = next((ln.strip(" -*") for ln in text.splitlines()
                      if ln.strip(" -*") and not ln.rstrip().endswith(":")), "")
        if first and not _leaks(first, target):
            attrs = {"wants": [first[:300]]}
    return attrs or None


class Summarizer:
    """Two requests per dialogue on one RoleClient; prompts cut to fit the engine's max_model_len."""

    def __init__(self, client: Any, *, item: str, run_seed: int | None, max_in_flight: int):
        self.client, self.item = client, item
        self.run_seed = run_seed  # None: requests carry no sampling seed (sampling_seeds: none)
        self.gate = asyncio.Semaphore(max_in_flight)
        self.failed = 0

    def _prompt(self, template: str, evidence: str, **extra: str) -> list[int] | None:
        budget = self.client.max_model_len - self.client.max_tokens
        for _ in range(8):  # long personas (dozens of reviews) are cut until the prompt fits
            messages = [{"role": "system", "content": SYSTEM.format(item=self.item)},
                        {"role": "user", "content": template.format(item=self.item, evidence=evidence, **extra)}]
            ids = self.client.render(messages)
            if len(ids) <= budget:
                return ids
            evidence = evidence[:int(len(evidence) * budget / len(ids) * 0.9)]
        return None

    def _seed(self, d: Dialogue, k: int) -> int | None:
        from interplay.generator.dialogue.conversation import turn_seed

        return None if self.run_seed is None else turn_seed(self.run_seed, d.dialogue_id, k)

    async def _ask(self, request_id: str, prompt: list[int] | None, seed: int | None) -> str | None:
        if prompt is None:
            return None
        async with self.gate:
            try:
                completion = await self.client.generate(request_id, prompt, seed)
            except EngineDead:
                raise
            except Exception:  # one failed request costs one field, not the run
                self.failed += 1
                return None
        return completion.text

    async def one(self, index: int, d: Dialogue) -> Dialogue:
        turns = _user_lines(d)
        summary, attrs = d.preference_summary, d.target_attributes
        tasks = []
        if summary is None:
            template, evidence = (SUMMARY_FROM_PERSONA, d.persona) if d.persona else (SUMMARY_FROM_TURNS, turns)
            tasks.append(self._ask(f"sum-{index}", self._prompt(template, evidence),
                                   self._seed(d, 0)))
        if not attrs:
            target = f"The {self.item} they finally wanted: {d.target_item}.\n" if d.target_item else ""
            tasks.append(self._ask(f"attr-{index}", self._prompt(ATTRIBUTES, turns, target=target),
                                   self._seed(d, 1)))
        answers = list(await asyncio.gather(*tasks))
        if summary is None:
            text = answers.pop(0)
            summary = clean_summary(text, d.target_item) if text else None
        if not attrs:
            text = answers.pop(0)
            attrs = parse_attributes(text, d.target_item) if text else None
        return dataclasses.replace(d, preference_summary=summary, target_attributes=attrs, persona=None)


def needs_summary(d: Dialogue) -> bool:
    return d.preference_summary is None or not d.target_attributes


def batches(dialogues: Iterator[Dialogue], size: int, skip: int) -> Iterator[list[Dialogue]]:
    """`size` dialogues at a time, after the first `skip` (those the written parts hold)."""
    batch: list[Dialogue] = []
    for i, d in enumerate(dialogues):
        if i < skip:
            continue
        batch.append(d)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


async def summarize_parts(config: Any, parts: Iterator[list[Dialogue]], open_engines: Any,
                          write: Callable[[list[Dialogue], str], None], *, first_index: int = 0,
                          progress: Any = None) -> tuple[str, int]:
    """Summarize part after part, writing each when done; the engine starts with the first part that needs it.
    Returns (model, failed requests)."""
    from tqdm import tqdm

    model, index = config.engine_args("user")["model"], first_index
    bar = tqdm(unit="dlg", initial=first_index, file=progress, disable=progress is None)
    async with contextlib.AsyncExitStack() as stack:
        summarizer = None
        for part in parts:
            todo = [i for i, d in enumerate(part) if needs_summary(d)]
            if todo and summarizer is None:
                client = (await stack.enter_async_context(open_engines(config)))["user"]
                model = client.model
                summarizer = Summarizer(client, item=config.conversation.item_noun, run_seed=config.sampling_run_seed,
                                        max_in_flight=config.max_in_flight)
            if todo:
                done = await asyncio.gather(*(summarizer.one(index + i, part[i]) for i in todo))
                for i, d in zip(todo, done):
                    part[i] = d
            write(part, model)
            index += len(part)
            bar.update(len(part))
    bar.close()
    return model, summarizer.failed if summarizer else 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", nargs="+", required=True, metavar="PATH", help="dialogues (any training format)")
    parser.add_argument("--format", choices=FORMATS, default="auto", help="data format (default: from content)")
    parser.add_argument("--config", required=True, help="generation config whose engine writes the summaries")
    parser.add_argument("--output", required=True,
                        help="directory of Parquet parts to write (the `messages` format); a rerun resumes it")
    parser.add_argument("--catalog", help="ReDial and LLM-REDIAL: target attributes from this catalog")
    parser.add_argument("--limit", type=int, help="only the first N dialogues")
    parser.add_argument("--part-size", type=int, default=1000,
                        help="dialogues per part: a crash loses at most the part being written (default 1000)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a generation config value, e.g. --set user.sampling.max_tokens=200")
    parser.add_argument("--overwrite", action="store_true", help="start the output over")
    parser.add_argument("--verbose", action="store_true", help="show vLLM's log lines here")


def main(args: argparse.Namespace) -> int:
    from interplay.generator.config import load_config, parse_override
    from interplay.generator.runtime.engine import check_config, open_engines

    out = Path(args.output)
    # The base model writes summaries: adapters of the config (trained simulators) are not used.
    overrides: dict[str, Any] = {"user.adapter": None, "recommender.adapter": None, "user.sampling": dict(SAMPLING)}
    overrides.update(parse_override(text) for text in args.set)
    config = load_config(args.config, overrides)
    check_config(config)
    inputs = {"data": [str(Path(p).expanduser().resolve()) for p in args.data], "format": args.format,
              "limit": args.limit, "catalog": args.catalog}
    output = SummaryOutput(out, inputs=inputs, part_size=args.part_size, overwrite=args.overwrite)
    if output.complete:
        print(f"{out} is complete: {output.num_done} dialogues (pass --overwrite to write it again)")
        return 0
    stats = LoadStats()
    dialogues = iter_dialogues(args.data, stats, fmt=args.format, keep_persona=True, catalog=args.catalog)
    if args.limit is not None:
        dialogues = itertools.islice(dialogues, args.limit)
    if output.num_done:
        print(f"interplay: resuming {out}: {len(output.parts)} parts ({output.num_done} dialogues) already written",
              file=sys.stderr)
    log = None if args.verbose else out.with_name(out.name + ".engine.log")
    if log is not None:
        print(f"interplay: vLLM's log (once it starts): {log}", file=sys.stderr)
    with engine_logs_to(log) as (_, err):
        _, failed = asyncio.run(summarize_parts(config, batches(dialogues, args.part_size, output.num_done),
                                                open_engines, output.write_part, first_index=output.num_done,
                                                progress=err))
    if not output.num_done:
        raise TrainingInputError(f"no usable dialogues in {', '.join(args.data)} ({stats.describe()})")
    output.finish(stats.as_dict())
    usable = sum(part["num_usable"] for part in output.parts)
    print(f"interplay: {stats.describe()}", file=sys.stderr)
    print(f"wrote {out}: {output.num_done} dialogues in {len(output.parts)} parts, {usable} with a summary and "
          "target attributes" + (f", {failed} failed requests" if failed else ""))
    return 0
