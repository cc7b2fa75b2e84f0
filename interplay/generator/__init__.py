"""Dialogue generation, one subpackage per stage:

    inputs/    seeds, catalog and grounding, MovieLens
    dialogue/  prompts, reply parsing, conversation state, incremental rendering
    runtime/   plan, scheduler and turn policies, vLLM engine layer, the run, the single-LLM baseline
    output/    row schema, storage, shard writer and manifest

config.py is the generation config (`interplay generate` is interplay/generate.py, which also runs partitions on Ray).
"""

from interplay.generator.config import ConfigError, GenerateConfig, load_config
from interplay.generator.dialogue.conversation import Completion, Conversation, Outcome
from interplay.generator.runtime.scheduler import EngineDead, Scheduler

__all__ = ["Completion", "ConfigError", "Conversation", "EngineDead", "GenerateConfig", "Outcome", "Scheduler",
           "load_config"]
