"""The reference-dependent baseline: one LLM writes the whole dialogue while knowing the target item.

This is the older way of making CRS corpora that Interplay argues against, kept here so that `interplay report`
can compare both on the same seeds with the same model:

    interplay generate --config configs/embedded.yaml --output out/baseline --baseline single-llm

It is a run like any other (Generation, run.py) with another turn policy: the scheduler sends one request per
conversation (SingleLLMPolicy), served by the recommender's model (and adapter) on one shared engine. Its prompt
holds the preference summary, the target attributes and the target's title ("in the end the Recommender
recommends Heat (1995) and the User accepts it"). The output is split into alternating user / recommender turns
at its "User:" / "Recommender:" labels, and each turn goes through the same parsing, markers, grounding and
ending rules as an Interplay turn (Conversation.add_reply), so the corpus has the same schema and the report
reads both alike. What differs, and is recorded:

- manifest.json has "mode": "single-llm" (and its own config hash, so the two kinds never mix in a directory);
- `user_model` and `recommender_model` are "single-llm:<model>": one model wrote both sides;
- the request's token counts are all on the first turn, whose `raw_text` holds the whole output;
- a dialogue whose text ends before the user accepts or gives up ends as `bad_reply`.

Same plan (conversation i = seed i), ids and sampling seeds (sampling_seeds) as a normal run, so
`--num-dialogues N` means the same N seeds; resume, Ctrl-C, the stats and the progress bar work the same way.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from interplay.common.partition import Partition
from interplay.common.roles import ROLES
from interplay.generator.config import GenerateConfig
from interplay.generator.dialogue.conversation import Completion, Conversation, Outcome
from interplay.generator.dialogue.parsing import ReplyParser
from interplay.generator.dialogue.prompts import format_attributes
from interplay.generator.inputs.catalog import Catalog
from interplay.generator.output.records import RoleInfo
from interplay.generator.runtime.identity import prompts_digest
from interplay.generator.runtime.policy import Request
from interplay.generator.runtime.run import Generation
from interplay.generator.runtime.scheduler import RoleClient

MODE = "single-llm"

SYSTEM = "You write realistic example conversations between a person looking for a {item} and a " \
         "{item} recommender."
PROMPT = """\
Write a conversation between a User and a Recommender.
About the user: {preference_summary}
What the user is in the mood for now: {target_attributes}.
{target_line}
Write at most {max_turns} lines, alternating "User:" and "Recommender:", the User first. Keep every line short. \
The Recommender names every {item} as Title (Year). When the User accepts a {item}, the User's line ends with \
{accept_marker}."""
TARGET_LINE = "In the end the Recommender recommends {target}, and the User accepts it."
NO_TARGET_LINE = "In the end the Recommender recommends a {item} that fits, and the User accepts it."

_USER_LABELS = r"user|seeker|customer|person|viewer|human|me"
_RECOMMENDER_LABELS = r"recommender|assistant|bot|agent|ai"
_LABEL = re.compile(r"^\s*(?:[-*>•]\s*)?[*_]*\s*(?:the\s+)?"
                    rf"(?:(?P<user>{_USER_LABELS})|(?P<rec>{_RECOMMENDER_LABELS}))"
                    r"\s*[*_]*\s*:\s*[*_]*\s*(?P<rest>.*)$", re.IGNORECASE)
_QUOTED = re.compile(r'^\s*["“](?P<inner>[^"“”]*)["”]\s*$')  # a whole turn in one pair of double quotes


def single_llm_config(config: GenerateConfig) -> GenerateConfig:
    """The engine config of the baseline: one shared engine with the recommender's model, engine arguments and
    adapter, and an output budget of a whole dialogue (the max_tokens of every turn of a full-length one)."""
    data = config.model_dump(mode="json")
    data["topology"] = "shared"
    data["engine"] = {**data["engine"], **data["recommender"]["engine"]}
    data["user"] = {**data["user"], "engine": {}, "adapter": None}
    data["recommender"]["engine"] = {}
    turns = config.conversation.max_turns
    budget = ((turns + 1) // 2) * config.sampling("user")["max_tokens"] \
        + (turns // 2) * config.sampling("recommender")["max_tokens"]
    data["recommender"]["sampling"] = {**config.sampling("recommender"), "max_tokens": budget}
    return GenerateConfig.model_validate(data)


def config_hash(config: GenerateConfig) -> str:
    """The baseline's own hash: a directory holds either Interplay dialogues or baseline ones."""
    return hashlib.sha256(f"{config.hash()}:{MODE}".encode()).hexdigest()[:16]


def baseline_messages(conv: Conversation, config: GenerateConfig, catalog: Catalog) -> list[dict[str, str]]:
    seed, conv_cfg = conv.seed, config.conversation
    item = catalog.get(seed.target_item_id) if seed.target_item_id else None
    target_line = (TARGET_LINE.format(target=item.display) if item is not None
                   else NO_TARGET_LINE.format(item=conv_cfg.item_noun))
    prompt = PROMPT.format(preference_summary=seed.preference_summary,
                           target_attributes=format_attributes(seed.target_attributes), target_line=target_line,
                           max_turns=conv_cfg.max_turns, item=conv_cfg.item_noun,
                           accept_marker=conv_cfg.accept_marker)
    return [{"role": "system", "content": SYSTEM.format(item=conv_cfg.item_noun)},
            {"role": "user", "content": prompt}]


def split_dialogue(text: str) -> tuple[list[tuple[str, str]], list[str]]:
    """The generated text -> ([(role, text), ...] in order, notes). A line opening with a speaker label ("User:",
    "**Recommender:**", "The user:") starts a turn, a turn wholly in double quotes loses them, unlabelled lines
    continue the current one, consecutive lines of one speaker are one turn, text before
    the first label and empty turns are dropped, and a leading recommender turn is dropped (the user speaks
    first, as in an Interplay dialogue)."""
    segments: list[list[Any]] = []
    notes: list[str] = []
    preamble = False
    for line in text.replace("\r\n", "\n").split("\n"):
        m = _LABEL.match(line)
        if m:
            role = "user" if m["user"] else "recommender"
            if segments and segments[-1][0] == role:
                segments[-1][1].append(m["rest"])
            else:
                segments.append([role, [m["rest"]]])
        elif segments:
            segments[-1][1].append(line)
        elif line.strip():
            preamble = True
    if preamble:
        notes.append("text before the first speaker label dropped")
    turns = [(role, "\n".join(s.strip() for s in lines if s.strip())) for role, lines in segments]
    turns = [(role, m["inner"].strip() if (m := _QUOTED.match(t)) else t) for role, t in turns]
    if any(not t for _, t in turns):
        notes.append("empty turn dropped")
        turns = [(r, t) for r, t in turns if t]
    merged: list[tuple[str, str]] = []  # dropping an empty turn can join two turns of one speaker
    for role, t in turns:
        if merged and merged[-1][0] == role:
            merged[-1] = (role, merged[-1][1] + "\n" + t)
        else:
            merged.append((role, t))
    if merged and merged[0][0] == "recommender":
        notes.append("leading recommender turn dropped")
        merged = merged[1:]
    return merged, notes


def apply_dialogue(conv: Conversation, completion: Completion, parser: ReplyParser, catalog: Catalog,
                   max_turns: int) -> None:
    """Turn one single-LLM completion into the conversation's turns and outcome."""
    turns, notes = split_dialogue(completion.text)
    for k, (_, text) in enumerate(turns):
        if conv.is_finished:
            notes.append(f"{len(turns) - k} turn(s) after the end dropped")
            break
        first = k == 0
        conv.add_reply(Completion(text, completion.num_prompt_tokens if first else 0,
                                  completion.num_output_tokens if first else 0,
                                  completion.num_cached_tokens if first else 0,
                                  completion.finish_reason if first else None), parser, catalog, max_turns)
    if not conv.turns:  # nothing usable: keep the raw output in one (empty) turn
        conv.add_reply(Completion("", completion.num_prompt_tokens, completion.num_output_tokens,
                                  completion.num_cached_tokens, completion.finish_reason), parser, catalog, max_turns)
        conv.finish(Outcome.BAD_REPLY, "no User:/Recommender: lines in the single-LLM output")
    first = conv.turns[0]
    first.raw_text = completion.text
    first.note = "; ".join(filter(None, [first.note, f"{MODE}: one request wrote the whole dialogue (its token "
                                         "counts are on this turn, its whole output is this raw_text)", *notes]))
    if not conv.is_finished:
        cut = " (output cut at max_tokens)" if completion.finish_reason == "length" else ""
        conv.finish(Outcome.BAD_REPLY, f"the single-LLM dialogue ended after {len(conv.turns)} turns without "
                                       f"the user accepting or giving up{cut}")


class SingleLLMPolicy:
    """One request, always request 0 of its conversation, writes the whole dialogue."""

    def __init__(self, config: GenerateConfig, catalog: Catalog, parser: ReplyParser):
        self.config, self.catalog, self.parser = config, catalog, parser

    def next_request(self, conv: Conversation) -> Request:
        # No prompt cache: the conversation never comes back for a second request.
        return Request("recommender", baseline_messages(conv, self.config, self.catalog), index=0,
                       name=f"{MODE} request", prompt_name="prompt")

    def apply(self, conv: Conversation, completion: Completion) -> None:
        apply_dialogue(conv, completion, self.parser, self.catalog, self.config.conversation.max_turns)


class BaselineGeneration(Generation):
    """A prepared baseline run: Generation's inputs, checks, plan, partitions, scheduler and writer, with one
    request per conversation on one engine, and records that say one model wrote both sides."""

    def __init__(self, config: GenerateConfig, out_dir: str | Path, *, overwrite: bool = False,
                 partition: Partition | None = None, **options: Any):
        # Validated before the output is opened (and its lease taken), so a refusal here touches nothing.
        llm_config = single_llm_config(config)
        super().__init__(config, out_dir, overwrite=overwrite, partition=partition, **options)
        self.llm_config = llm_config

    def corpus_identity(self) -> dict[str, Any]:
        # Its own mode and prompt: a directory holds either Interplay dialogues or baseline ones.
        return {**super().corpus_identity(), "mode": MODE,
                "prompts": prompts_digest(SYSTEM, PROMPT, TARGET_LINE, NO_TARGET_LINE)}

    def _manifest_extra(self) -> dict[str, Any]:
        return {**super()._manifest_extra(), "mode": MODE}

    def engine_config(self) -> GenerateConfig:
        return self.llm_config

    def policy(self) -> SingleLLMPolicy:
        cfg = self.config.conversation
        return SingleLLMPolicy(self.config, self.catalog, ReplyParser(cfg.accept_marker, cfg.quit_marker))

    def role_infos(self, clients: dict[str, RoleClient]) -> dict[str, RoleInfo]:
        # One model wrote both sides: both roles' columns name it, with the whole dialogue's sampling.
        info = RoleInfo(f"{MODE}:{clients['recommender'].model}", self.llm_config.recommender.adapter,
                        self.llm_config.sampling("recommender"))
        return {role: info for role in ROLES}

    def record_protocol(self) -> str:
        return "single_llm"


__all__ = ["BaselineGeneration", "MODE", "SingleLLMPolicy", "apply_dialogue", "baseline_messages",
           "single_llm_config", "split_dialogue"]
