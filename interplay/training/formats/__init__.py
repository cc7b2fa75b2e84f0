"""The dialogue formats interplay reads (one record into a Dialogue) and the ones `interplay export` writes."""

from interplay.training.formats.chat import corpus_record, messages_record, sharegpt_record
from interplay.training.formats.llm_redial import llm_redial_records
from interplay.training.formats.pearl import pearl_record
from interplay.training.formats.redial import redial_record

__all__ = ["corpus_record", "llm_redial_records", "messages_record", "pearl_record", "redial_record",
           "sharegpt_record"]
