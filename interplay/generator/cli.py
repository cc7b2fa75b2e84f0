"""`interplay generate`: generate a corpus, or resume one (rerun the same command on the same --output).

    interplay generate --config configs/embedded.yaml --output out/embedded [--num-dialogues N] [--set K=V ...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from interplay.generator.config import load_config, parse_override
from interplay.generator.scheduler import EngineDead

HELP = "generate a corpus (resumes when rerun on the same --output)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML config, e.g. configs/embedded.yaml")
    parser.add_argument("--output", required=True, help="output directory (shards + manifest.json)")
    parser.add_argument("--num-dialogues", type=int, help="the first N conversations of the run's order")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config value, e.g. --set user.sampling.temperature=0.7 (repeatable)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a run with a different config in --output")
    parser.add_argument("--verbose", action="store_true",
                        help="show vLLM's log lines here instead of writing them to OUTPUT/logs/engine.log")


@contextlib.contextmanager
def _engine_logs_to(path: Path | None) -> Iterator[tuple[TextIO, TextIO]]:
    """Send everything written to fds 1 and 2 (vLLM, its engine-core process, torch) to `path`; yield streams on
    the original terminal for our own progress bar and summary."""
    if path is None:
        yield sys.stdout, sys.stderr
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    out, err = os.fdopen(os.dup(saved[0]), "w", buffering=1), os.fdopen(os.dup(saved[1]), "w", buffering=1)
    os.dup2(log, 1)
    os.dup2(log, 2)
    try:
        yield out, err
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, log):
            os.close(fd)
        out.close()
        err.close()


def _summary(manifest: dict[str, Any], out_dir: str) -> str:
    totals, run = manifest["totals"], manifest["runs"][-1]
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(totals["outcomes"].items(), key=lambda kv: -kv[1]))
    cached = ", ".join(f"{role} {share:.0%}" for role, share in totals["cached_prompt_share"].items())
    state = "complete" if manifest["status"] == "complete" else "INCOMPLETE (rerun the same command to resume)"
    return "\n".join([
        f"corpus: {totals['num_dialogues']} dialogues in {len(manifest['shards'])} shards, {state}",
        f"  outcomes: {outcomes or '-'}",
        f"  this run: {run['num_dialogues']} dialogues in {run['wall_s']:.1f} s, "
        f"{run['dialogues_per_s']:.2f} dialogues/s, {run['output_tok_per_s']:.0f} output tok/s",
        f"  prompt tokens served from cache: {cached}",
        f"  output: {out_dir}  (manifest: {Path(out_dir) / 'manifest.json'})",
    ])


def main(args: argparse.Namespace) -> int:
    from interplay.generator.engine import check_config, open_engines
    from interplay.generator.run import Generation

    overrides = dict(parse_override(text) for text in args.set)
    if args.num_dialogues is not None:
        overrides["num_dialogues"] = args.num_dialogues
    config = load_config(args.config, overrides)
    check_config(config)
    generation = Generation(config, args.output, overwrite=args.overwrite)
    print(f"interplay: {generation.num_already_done} of {config.num_dialogues} dialogues already in "
          f"{args.output}; generating {generation.num_remaining} ({generation.scan.num_valid} usable seeds"
          + (f", skipped {generation.scan.skipped}" if generation.scan.skipped else "") + ")", file=sys.stderr)
    log_path = None if args.verbose else Path(args.output) / "logs" / "engine.log"
    if log_path is not None and generation.num_remaining:
        print(f"interplay: starting vLLM (its log: {log_path})", file=sys.stderr)
    failure = None
    with _engine_logs_to(log_path if generation.num_remaining else None) as (out, err):
        try:
            manifest = asyncio.run(generation.run(open_engines, progress=err))
        except EngineDead as e:
            failure, manifest = str(e), generation.writer.manifest
        except (KeyboardInterrupt, asyncio.CancelledError):  # a second Ctrl-C cancels the run at once
            failure, manifest = "interrupted", generation.writer.manifest
    print(_summary(manifest, args.output))
    if failure:
        print(f"interplay: stopped: {failure}; finished dialogues are saved, rerun the same command to resume",
              file=sys.stderr)
    return 0 if manifest["status"] == "complete" else 1
