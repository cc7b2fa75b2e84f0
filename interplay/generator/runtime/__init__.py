"""Running conversations at scale: the run's deterministic plan, the asyncio scheduler and its turn policies, the
vLLM engine layer (the only module that imports vLLM), the run itself (checks, engines, scheduler, writer) and the
single-LLM baseline (a run with its own turn policy)."""
