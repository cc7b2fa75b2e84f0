"""Dialogue generation: seeds, conversation protocol, engine layer, scheduler and Parquet writer."""

from interplay.generator.config import ConfigError, GenerateConfig, load_config
from interplay.generator.conversation import Completion, Conversation, Outcome
from interplay.generator.scheduler import EngineDead, Scheduler

__all__ = ["Completion", "ConfigError", "Conversation", "EngineDead", "GenerateConfig", "Outcome", "Scheduler",
           "load_config"]
