"""interplay: reference-free conversational-recommendation corpora from two LLMs talking on vLLM."""

__version__ = "0.1.0"
