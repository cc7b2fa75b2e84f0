"""Every command in README.md and docs/*.md runs as written, as far as it can be checked without running it.

The fenced code blocks of the docs (not python, yaml or json ones) are read line by line, `\\` continuations
joined, and each shell command on a line is checked:

    interplay ...            parsed by the real parser (interplay.cli._parser()), flags spelled out in full
                             (no abbreviations); --set keys exist in the config they set; --config files exist
    python -m MODULE ...     the module imports; `-m interplay`, `-m benchmarks.throughput` and `.seeds` arguments parse
    make TARGET ...          the target is in the Makefile; CONFIG=... names an existing file
    pip install -e ".[x,y]"  the extras exist in pyproject.toml

A line that holds a placeholder (`...`, `<name>`, or a bare capitalised word such as DIR) cannot run as written:
it is skipped, listed and counted. Run: `.venv/bin/python -m pytest -q tests/test_docs_commands.py`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import re
import shlex
import typing
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomllib
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOT_SHELL = {"python", "py", "yaml", "yml", "json", "toml"}
# Words that stand for a value the reader supplies; a line with one is skipped (and counted).
PLACEHOLDER_WORDS = {"DIR", "D", "F", "C", "N", "I", "A", "M", "R", "P", "K=V", "FILE", "OUT", "CORPUS"}
# Shell variables the docs use, and a value each takes where the command runs.
SHELL_VARIABLES = {"SLURM_ARRAY_TASK_ID": "3"}
OPERATORS = {"|", "||", "&&", ";", "&"}
REDIRECTS = {">", ">>", "<", "2>", "&>"}
MAX_PLACEHOLDER_LINES = 5


@dataclass(frozen=True)
class Command:
    where: str          # file:line
    argv: tuple[str, ...]
    text: str


def shell_lines(markdown: str, name: str) -> list[tuple[str, str]]:
    """(file:line, logical line) for every line of the fenced shell blocks, continuations joined."""
    out, lang, start, pending = [], None, 0, ""
    for number, line in enumerate(markdown.splitlines(), 1):
        fence = re.match(r"^\s*(```+|~~~+)\s*([\w+-]*)", line)
        if fence:
            lang = None if lang is not None else fence.group(2).lower()
            pending = ""
            continue
        if lang is None or lang in NOT_SHELL:
            continue
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((f"{name}:{start}", pending + line))
        pending = ""
    return out


def split_commands(where: str, line: str) -> list[Command]:
    """The simple commands of a shell line: split at | && ; &, redirections and leading VAR=value dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:          # not shell (an unbalanced quote in output text)
        return []
    commands, current, skip_next = [], [], False
    for token in [*tokens, ";"]:
        if skip_next:
            skip_next = False
        elif token in REDIRECTS:
            skip_next = True
        elif token in OPERATORS:
            while current and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", current[0]):
                current.pop(0)
            if current:
                commands.append(Command(where, tuple(current), line.strip()))
            current = []
        else:
            current.append(token)
    return commands


def doc_commands(paths: list[Path] = DOCS) -> list[Command]:
    commands = []
    for path in paths:
        name = str(path.relative_to(ROOT))
        for where, line in shell_lines(path.read_text(), name):
            commands.extend(split_commands(where, line))
    return commands


def is_placeholder(token: str) -> bool:
    return "..." in token or bool(re.search(r"<[^<>]+>", token)) or token in PLACEHOLDER_WORDS


def expand(argv: tuple[str, ...]) -> list[str]:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in SHELL_VARIABLES:
            raise KeyError(f"${name}: add it to SHELL_VARIABLES in tests/test_docs_commands.py with a value")
        return SHELL_VARIABLES[name]
    return [re.sub(r"\$\{(\w+)\}|\$(\w+)", value, token) for token in argv]


def kind(command: Command) -> str:
    argv = command.argv
    program = Path(argv[0]).name
    if program == "interplay":
        return "interplay"
    if program == "make":
        return "make"
    if program.startswith("python") and "-m" in argv:
        return "python -m"
    if program.startswith("pip") and "install" in argv:
        return "pip"
    return "other"


# ---- the checks: each returns a problem, or None ----

def strict(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The parser without prefix matching: a doc must spell every flag out (`--num-dialogue` is a typo)."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                strict(sub)
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> tuple[argparse.Namespace | None, str | None]:
    stderr, stdout = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
            return parser.parse_args(argv), None
    except SystemExit as e:
        if e.code == 0:         # --help
            return None, None
        return None, stderr.getvalue().strip().splitlines()[-1]


def config_key_problem(model: type[BaseModel], dotted: str) -> str | None:
    """None when `dotted` names a key of `model` (a free dict, such as vLLM's engine arguments, takes any key)."""
    parts = dotted.split(".")
    node: type[BaseModel] = model
    for i, part in enumerate(parts):
        so_far = ".".join(parts[:i + 1])
        if part not in node.model_fields:
            return f"--set {dotted}: {so_far} is not a config key"
        annotation = node.model_fields[part].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            node = annotation
        elif annotation is dict or typing.get_origin(annotation) is dict:
            return None
        elif i < len(parts) - 1:
            return f"--set {dotted}: {so_far} is a value, not a section"
    return None


def interplay_problem(argv: list[str]) -> str | None:
    from interplay.cli import _parser
    from interplay.generator.config import ConfigError, GenerateConfig, parse_override
    from interplay.training.config import TrainConfig

    args, error = parse(strict(_parser()), argv)
    if error or args is None:
        return error
    model = TrainConfig if args.command == "train" else GenerateConfig
    for override in getattr(args, "set", None) or []:
        try:
            key, _ = parse_override(override)
        except ConfigError as e:
            return str(e)
        if problem := config_key_problem(model, key):
            return problem
    for flag in ("config", "prompts_from"):
        path = getattr(args, flag, None)
        if path and path.startswith("configs/") and not (ROOT / path).is_file():
            return f"--{flag.replace('_', '-')} {path}: no such file"
    return None


def python_module_problem(argv: list[str]) -> str | None:
    index = argv.index("-m")
    module, rest = argv[index + 1], argv[index + 2:]
    if module == "interplay":
        return interplay_problem(rest)
    try:
        imported = importlib.import_module(module)
    except ImportError as e:
        return f"python -m {module}: does not import ({e})"
    if module in ("benchmarks.throughput", "benchmarks.seeds"):
        _, error = parse(_ThroughputParser(imported), rest)
        return error
    return None


class _ThroughputParser:
    """benchmarks.throughput and .seeds build their parser inside parse_args: parse through that."""

    def __init__(self, module: typing.Any):
        self.module = module

    def parse_args(self, argv: list[str]) -> argparse.Namespace:
        return self.module.parse_args(argv)


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return {m.group(1) for m in re.finditer(r"^([A-Za-z0-9_-]+)\s*:(?!=)", text, re.MULTILINE)}


def make_problem(argv: list[str]) -> str | None:
    targets = make_targets()
    for token in argv[1:]:
        if token.startswith("-"):
            continue
        if "=" in token:
            name, value = token.split("=", 1)
            if name == "CONFIG" and not (ROOT / value).is_file():
                return f"make {token}: no such file"
        elif token not in targets:
            return f"make {token}: no such target in the Makefile (targets: {', '.join(sorted(targets))})"
    return None


def pip_problem(argv: list[str]) -> str | None:
    extras_known = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for token in argv:
        if match := re.fullmatch(r"\.\[([\w,-]+)\]", token):
            for extra in match.group(1).split(","):
                if extra not in extras_known:
                    return f"pip install {token}: no extra {extra!r} in pyproject.toml"
    return None


CHECKS = {"interplay": lambda argv: interplay_problem(argv[1:]), "make": make_problem,
          "python -m": python_module_problem, "pip": pip_problem}


def check(command: Command) -> str | None:
    """The problem with a doc command that holds no placeholder (None: it checks out)."""
    return CHECKS[kind(command)](expand(command.argv))


def sort_out(commands: list[Command]) -> tuple[list[Command], list[Command]]:
    """(commands to check, placeholder lines)."""
    checked, skipped = [], []
    for command in commands:
        if kind(command) == "other":
            continue
        (skipped if any(is_placeholder(t) for t in command.argv) else checked).append(command)
    return checked, skipped


COMMANDS, PLACEHOLDER_LINES = sort_out(doc_commands())


# ---- the tests ----

def test_the_docs_hold_commands_to_check() -> None:
    kinds = [kind(c) for c in COMMANDS]
    assert kinds.count("interplay") >= 20, "the extraction found too few interplay commands: is it broken?"
    assert {"make", "python -m", "pip"} <= set(kinds)


@pytest.mark.parametrize("command", COMMANDS, ids=[c.where for c in COMMANDS])
def test_a_doc_command_runs_as_written(command: Command) -> None:
    problem = check(command)
    assert problem is None, f"{command.where}: {command.text}\n  -> {problem}"


def test_placeholder_lines_are_few_and_counted() -> None:
    listing = "\n".join(f"  {c.where}: {c.text}" for c in PLACEHOLDER_LINES)
    print(f"{len(COMMANDS)} commands checked, {len(PLACEHOLDER_LINES)} placeholder lines skipped:\n{listing}")
    assert len(PLACEHOLDER_LINES) <= MAX_PLACEHOLDER_LINES, (
        f"{len(PLACEHOLDER_LINES)} doc commands hold placeholders and cannot run as written:\n{listing}")


@pytest.mark.parametrize(("line", "expected"), [
    ("interplay generate --config configs/embedded.yaml --output out/x --num-dialgoues 3", "--num-dialgoues"),
    ("interplay generate --config configs/embedded.yaml --output out/x --num-dialogue 3", "--num-dialogue"),
    ("interplay show out/x --outcomes accepted", "--outcomes"),
    ("interplay generate --config configs/embedded.yaml --output out/x --set max_inflight=8", "max_inflight"),
    ("interplay generate --config configs/embedded.yaml --output out/x --set seed.source=file", "seed.source"),
    ("interplay train --role user --data d --output a --set lora.rank=8", "lora.rank"),
    ("interplay generate --config configs/missing.yaml --output out/x", "configs/missing.yaml"),
    ("interplay export out/x --format csv --output f", "csv"),
    ("make generat", "generat"),
    ("make generate CONFIG=configs/missing.yaml", "configs/missing.yaml"),
    ("python -m benchmarks.throughput --dialogs 8", "--dialogs"),
    ("python -m interplay.nothing_here", "interplay.nothing_here"),
    ('pip install -e ".[gpu,trian]"', "trian"),
])
def test_a_wrong_command_is_caught(line: str, expected: str) -> None:
    commands, _ = sort_out([c for where, text in shell_lines(f"```bash\n{line}\n```\n", "doc.md")
                            for c in split_commands(where, text)])
    assert len(commands) == 1
    problem = check(commands[0])
    assert problem is not None and expected in problem, problem


def test_the_extraction_reads_shell_as_a_shell_does() -> None:
    text = ("```bash\n"
            "BENCH_QUICK=1 make bench    # a comment\n"
            "interplay generate --config configs/embedded.yaml \\\n"
            "    --output out/x --num-partitions 8 --partition-index $SLURM_ARRAY_TASK_ID\n"
            "interplay train --role user --data d --output a --print-config > train.yaml\n"
            "interplay status DIR\n"
            "```\n"
            "```python\ninterplay generate --nonsense\n```\n"
            "```\ninterplay: 6 records read\n```\n")
    commands, skipped = sort_out([c for where, line in shell_lines(text, "doc.md")
                                  for c in split_commands(where, line)])
    assert [c.argv[:2] for c in commands] == [("make", "bench"), ("interplay", "generate"), ("interplay", "train")]
    assert [c.where for c in commands] == ["doc.md:2", "doc.md:3", "doc.md:5"]
    assert [c.argv for c in skipped] == [("interplay", "status", "DIR")]
    assert all(check(c) is None for c in commands)


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        keys.append(prefix + name)
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            keys.extend(_keys(field.annotation, f"{prefix}{name}."))
    return keys


@pytest.mark.parametrize(("doc", "model_path"), [
    ("docs/configuration.md", "interplay.generator.config:GenerateConfig"),
    ("docs/training.md", "interplay.training.config:TrainConfig"),
])
def test_every_config_key_is_documented(doc: str, model_path: str) -> None:
    module, name = model_path.split(":")
    model = getattr(importlib.import_module(module), name)
    text = (ROOT / doc).read_text()
    missing = [key for key in _keys(model) if not re.search(rf"\b{re.escape(key.rsplit('.', 1)[-1])}\b", text)]
    assert not missing, f"{doc} does not name these {name} keys: {', '.join(missing)}"
