"""The topologies compared: one shared engine, two separate engines, one shared engine with a LoRA adapter per
role. On the CPU the adapters are random rank-8 PEFT adapters (what is measured is serving cost, not quality),
built like the real-vLLM topology tests build theirs."""

from __future__ import annotations

import json
from pathlib import Path

from interplay.generator.config import GenerateConfig


def make_lora(path: Path, model_dir: str, *, rank: int = 8, seed: int = 0, scale: float = 0.01) -> Path:
    """A random (untrained) PEFT LoRA adapter on the attention projections q_proj and v_proj."""
    import torch
    from safetensors.torch import save_file

    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_dir)  # a local directory or a hub id
    hidden, layers = config.hidden_size, config.num_hidden_layers
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    kv = config.num_key_value_heads * head_dim
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for i in range(layers):
        for name, out in (("q_proj", hidden), ("v_proj", kv)):
            prefix = f"base_model.model.model.layers.{i}.self_attn.{name}"
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(rank, hidden, generator=gen) * scale
            tensors[f"{prefix}.lora_B.weight"] = torch.randn(out, rank, generator=gen) * scale
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, path / "adapter_model.safetensors")
    (path / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": 2 * rank, "lora_dropout": 0.0,
        "target_modules": ["q_proj", "v_proj"], "bias": "none", "fan_in_fan_out": False,
        "base_model_name_or_path": model_dir}))
    return path


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
