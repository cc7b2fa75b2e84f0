"""The topologies compared: one shared engine, two separate engines, one shared engine with a LoRA adapter per
role. On the CPU the adapters are random rank-8 PEFT adapters (what is measured is serving cost, not quality),
built like the real-vLLM topology tests build theirs."""

from __future__ import annotations

from pathlib import Path

from interplay.generator.config import GenerateConfig
from interplay.training.random_lora import make_lora

TOPOLOGIES = ("shared", "separate", "shared-lora")


def topology_config(config: GenerateConfig, name: str, work: Path) -> GenerateConfig:
    """`config` as the named topology; num_dialogues and max_in_flight are kept.

    shared       the config without adapters
    separate     two engines of the same model, each with half the memory: half the KV cache bytes when the
                 config sets kv_cache_memory_bytes (the CPU), else half the gpu_memory_utilization
    shared-lora  the config's adapters, or random ones where a role has none
    """
    data = config.model_dump()
    if data["topology"] == "separate":  # back to one engine (the recommender's arguments) first
        data["engine"] = {**data["engine"], **data["recommender"]["engine"]}
        data["user"]["engine"], data["recommender"]["engine"], data["topology"] = {}, {}, "shared"
    if name == "shared":
        data["user"]["adapter"] = data["recommender"]["adapter"] = None
        return GenerateConfig.model_validate(data)
    if name == "separate":
        engine = data["engine"]
        data["user"]["adapter"] = data["recommender"]["adapter"] = None
        if engine.get("kv_cache_memory_bytes"):
            half = {"kv_cache_memory_bytes": max(int(engine["kv_cache_memory_bytes"]) // 2, 256 * 2**20)}
        else:
            half = {"gpu_memory_utilization": round(float(engine.get("gpu_memory_utilization", 0.9)) / 2, 3)}
        data["topology"] = "separate"
        data["engine"] = {k: v for k, v in engine.items() if k not in ("kv_cache_memory_bytes",
                                                                       "gpu_memory_utilization")}
        data["user"]["engine"] = dict(half)
        data["recommender"]["engine"] = dict(half)
        return GenerateConfig.model_validate(data)
    if name == "shared-lora":
        model = config.engine_args("user")["model"]
        for seed, role in enumerate(("user", "recommender"), start=1):
            if not data[role]["adapter"]:
                data[role]["adapter"] = str(make_lora(work / "adapters" / role, model, seed=seed))
        return GenerateConfig.model_validate(data)
    raise ValueError(f"unknown topology {name!r}; known: {', '.join(TOPOLOGIES)}")
