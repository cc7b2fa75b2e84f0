"""The input errors every command reports as one message and exit status 2 (never a traceback)."""

from interplay.common.adapters import AdapterError
from interplay.generator.config import ConfigError
from interplay.generator.inputs.catalog import CatalogError
from interplay.generator.inputs.seeds import SeedError
from interplay.generator.output.writer import OutputError
from interplay.generator.runtime.server_checks import ServerError
from interplay.training.errors import TrainingInputError

# A new input error type belongs here, so that `interplay` reports it cleanly.
INPUT_ERRORS: tuple[type[Exception], ...] = (ConfigError, SeedError, CatalogError, OutputError,
                                                TrainingInputError, AdapterError, ServerError)
