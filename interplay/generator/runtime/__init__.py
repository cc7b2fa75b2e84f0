"""Running conversations at scale: the run's deterministic plan, the asyncio scheduler, the vLLM engine layer (the
only module that imports vLLM), the run itself (checks, engines, scheduler, writer) and the single-LLM baseline."""
