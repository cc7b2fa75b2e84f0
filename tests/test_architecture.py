"""The layout's promises, checked on the source: which stage may import which, and where vLLM and the training
stack may be imported at all."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "interplay"


def imports(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (imports inside functions count too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


def offenders(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    return [f"{p.relative_to(PACKAGE)} imports {m}" for p in modules(folder) for m in sorted(imports(p))
            if m.startswith(forbidden)]


def test_generator_imports_nothing_from_training_or_distributed() -> None:
    assert offenders("generator", ("interplay.training", "interplay.distributed")) == []


def test_common_imports_no_stage() -> None:
    stages = ("interplay.generator", "interplay.training", "interplay.distributed", "interplay.report")
    assert offenders("common", stages) == []


def test_only_the_engine_layer_imports_vllm() -> None:
    users = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
             if any(m == "vllm" or m.startswith("vllm.") for m in imports(p))}
    assert users == {"generator/runtime/engine.py"}


def test_only_training_imports_the_training_stack() -> None:
    stack = ("peft", "transformers", "torch", "accelerate")
    outside = [p for p in PACKAGE.rglob("*.py") if "training" not in p.parts
               and any(m.split(".")[0] in stack for m in imports(p))]
    # prepare.py turns the embedded GGUF file into a transformers checkpoint, once, with transformers itself.
    # server_checks.py loads the served model's tokenizer (topology: server renders prompts here, with its chat
    # template, where no vLLM is installed to load it).
    assert sorted(str(p.relative_to(PACKAGE)) for p in outside) == ["generator/runtime/server_checks.py",
                                                                    "prepare.py"]


def test_no_generator_subpackage_imports_upwards_into_the_generator_root_cli() -> None:
    # The generator's stages may use its config, never a command module.
    assert offenders("generator", ("interplay.generate", "interplay.cli", "interplay.show")) == []
