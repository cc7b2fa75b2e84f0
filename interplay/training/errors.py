"""The training commands' input error: bad data, config or adapter, reported as one message with exit status 2."""


class TrainingInputError(Exception):
    """The training input cannot be used (no usable examples, bad config, adapter that does not fit the base)."""
