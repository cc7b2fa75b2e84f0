"""One conversation, engine-agnostic: the prompts each role sees, parsing replies, the conversation's state and
how it ends, and rendering chat messages to token ids incrementally."""
