"""A random (untrained) PEFT LoRA adapter for a base model: what serving an adapter costs does not depend on what
it learned, so the topology benchmark and the real-vLLM adapter tests serve these. torch, safetensors and
transformers are imported inside, as in the rest of interplay.training."""

from __future__ import annotations

import json
from pathlib import Path


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
