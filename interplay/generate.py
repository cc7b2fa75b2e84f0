"""`interplay generate`: generate a corpus, or resume one (rerun the same command on the same --output).

    interplay generate --config configs/embedded.yaml --output out/embedded [--num-dialogues N] [--set K=V ...]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shlex
import sys
from pathlib import Path
from typing import Any

from interplay.common.partition import Partition
from interplay.generator.config import ConfigError, load_config, parse_override
from interplay.generator.output.storage import OutputError, Storage
from interplay.generator.runtime.scheduler import EngineDead
from interplay.logs import engine_logs_to

HELP = "generate a corpus (resumes when rerun on the same --output)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML config, e.g. configs/embedded.yaml")
    parser.add_argument("--output", required=True, help="output directory (shards + manifest.json)")
    parser.add_argument("--num-dialogues", type=int, help="the first N conversations of the run's order")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config value, e.g. --set user.sampling.temperature=0.7 (repeatable)")
    parser.add_argument("--overwrite", action="store_true",
                        help="DELETE this run's own shards and manifest in --output (with --partition-index, that "
                             "partition's only; with --ray, every partition's) and start over; other files are "
                             "kept, and it is refused while another writer holds the output")
    parser.add_argument("--baseline", choices=["single-llm"],
                        help="instead of two LLMs talking, the reference-dependent baseline: one LLM writes the "
                             "whole dialogue knowing the target (interplay/generator/runtime/baseline.py)")
    parser.add_argument("--num-partitions", "--num-shards", type=int, default=1, metavar="N",
                        help="split the run into N disjoint partitions (by seed-id hash) that separate processes "
                             "generate into the same --output, e.g. a SLURM array; see `interplay status`")
    parser.add_argument("--partition-index", "--shard-index", type=int, metavar="I",
                        help="the partition this process generates, 0..N-1")
    parser.add_argument("--ray", action="store_true",
                        help="run the partitions as Ray workers, one engine group each (one GPU by default)")
    parser.add_argument("--address", help="Ray cluster to join ('auto': the running one); default: start a local one")
    parser.add_argument("--num-workers", type=int,
                        help="Ray workers, one partition each (default: the partition count of the run already in "
                             "--output, else one per GPU in the cluster)")
    parser.add_argument("--max-restarts", type=int, default=3,
                        help="Ray: restarts of a worker that dies before its partition is reported unfinished")
    parser.add_argument("--verbose", action="store_true",
                        help="show vLLM's log lines here instead of writing them to OUTPUT/logs/engine.log")
    parser.add_argument("--single-writer-i-promise", action="store_true",
                        help="write to a store without conditional writes (gs://, hdfs://, an S3-compatible store "
                             "that ignores If-None-Match): you promise that exactly one writer per partition runs, "
                             "because there two writers started together are not kept apart (docs/guarantees.md)")


def _summary(manifest: dict[str, Any], out_dir: str) -> str:
    totals, run = manifest["totals"], manifest["runs"][-1]
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(totals["outcomes"].items(), key=lambda kv: -kv[1]))
    cached = ", ".join(f"{role} {share:.0%}" for role, share in totals["cached_prompt_share"].items())
    state = "complete" if manifest["status"] == "complete" else "INCOMPLETE (rerun the same command to resume)"
    if num_retry := manifest.get("failures", {}).get("num_pending_retry"):
        state = state.removesuffix(")") + f"; rerun to retry {num_retry} failed conversations)"
    return "\n".join([
        f"corpus: {totals['num_dialogues']} dialogues in {manifest['num_shards']} shards, {state}",
        f"  outcomes: {outcomes or '-'}",
        f"  this run: {run['num_dialogues']} dialogues in {run['wall_s']:.1f} s, "
        f"{run['dialogues_per_s']:.2f} dialogues/s, {run['output_tok_per_s']:.0f} output tok/s",
        f"  prompt tokens served from cache: {cached}",
        f"  output: {out_dir}  (manifest: {str(out_dir).rstrip('/')}/manifest.json)",
    ])


def main(args: argparse.Namespace) -> int:
    from interplay.generator.runtime.run import Generation

    overrides = dict(parse_override(text) for text in args.set)
    if args.num_dialogues is not None:
        overrides["num_dialogues"] = args.num_dialogues
    config = load_config(args.config, overrides)
    on_server = config.topology == "server"
    check_config, open_engines, EngineStartError = engine_layer(config)
    check_config(config)
    if args.ray:
        return _run_on_ray(config, args)
    partition = _partition(args)
    if getattr(args, "baseline", None):
        if on_server:  # it opens one shared in-process engine
            raise ConfigError("--baseline: not with topology: server")
        from interplay.generator.runtime.baseline import BaselineGeneration as Generation  # noqa: F811
    output = Storage(args.output, single_writer=True) if args.single_writer_i_promise else args.output
    generation = Generation(config, output, overwrite=args.overwrite,
                            **({"partition": partition} if partition else {}))
    generation.writer.run_info["command"] = command_line(args)  # recorded per run; the dataset card shows it
    print(f"interplay: {generation.num_already_done} of {config.num_dialogues} dialogues already in "
          f"{args.output}; generating {generation.num_remaining} ({generation.scan.num_valid} usable seeds"
          + (f", skipped {generation.scan.skipped}" if generation.scan.skipped else "") + ")", file=sys.stderr)
    if getattr(generation, "num_cards_cut", 0):
        print(f"interplay: note: {generation.num_cards_cut} catalog items' cards are longer than "
              f"user.max_card_chars={config.user.max_card_chars} and are cut", file=sys.stderr)
    log_path = None if args.verbose or on_server else generation.engine_log_path()
    if log_path is not None and generation.num_remaining:
        print(f"interplay: starting vLLM (its log: {log_path})", file=sys.stderr)
    for role, served in (generation.served or {}).items():
        for note in served.notes:
            print(f"interplay: note: {role}: {note}", file=sys.stderr)
    failure = start_failure = write_failure = None
    log_start = log_path.stat().st_size if log_path is not None and log_path.is_file() else 0
    with engine_logs_to(log_path if generation.num_remaining else None) as (out, err):
        try:
            manifest = asyncio.run(generation.run(open_engines, progress=err))
        except EngineStartError as e:
            start_failure = e
        except OutputError as e:  # the output failed mid-run (a store gone, the lease lost); the shards stay
            write_failure = e
        except EngineDead as e:
            failure, manifest = f"{e}; {_see_log(log_path, on_server)}", generation.writer.manifest
            if _interrupted(generation):
                # A Ctrl-C typed in the terminal goes to the whole process group: vLLM's processes stop on it too.
                failure = ("interrupted (the same Ctrl-C stopped vLLM's engine, so the conversations in flight were "
                           "abandoned; they are generated again on the next run)")
        except (KeyboardInterrupt, asyncio.CancelledError):  # a second Ctrl-C cancels the run at once
            failure, manifest = "interrupted", generation.writer.manifest
    if start_failure is not None:
        cause = _root_cause(log_path, log_start)
        print(f"interplay: error: {start_failure}" + (f"; cause: {cause}" if cause else "")
              + ("" if on_server else f"; {_see_log(log_path)}"), file=sys.stderr)
        return 2
    if write_failure is not None:
        print(f"interplay: stopped: {write_failure}", file=sys.stderr)
        return 1
    stopped_early = getattr(generation, "stopped_early", None) if failure is None else None
    if failure is None and not stopped_early and manifest["status"] != "complete" and _interrupted(generation):
        failure = "interrupted"  # the first Ctrl-C: no new conversations, the active ones finished and written
    print(_summary(manifest, args.output))
    if (smoke := zero_shot_note(config)) and manifest["totals"]["num_dialogues"]:
        print(smoke)
    if stopped_early:
        print(f"interplay: stopped early: {stopped_early}; fix the cause and rerun the same command (failed "
              f"conversations are retried, up to max_attempts={config.max_attempts} runs each)", file=sys.stderr)
        return 1
    if failure:
        print(f"interplay: stopped: {failure}; finished dialogues are saved, rerun the same command to resume",
              file=sys.stderr)
    return 0 if manifest["status"] == "complete" else 1


def command_line(args: argparse.Namespace) -> str:
    """The command that makes this output and resumes it, as the manifest records it for the dataset card:
    every flag that decides what is generated where (not --overwrite or --verbose)."""
    argv = ["interplay", "generate", "--config", args.config, "--output", str(args.output)]
    if args.num_dialogues is not None:
        argv += ["--num-dialogues", str(args.num_dialogues)]
    for override in args.set:
        argv += ["--set", override]
    if getattr(args, "baseline", None):
        argv += ["--baseline", args.baseline]
    if args.partition_index is not None:
        argv += ["--num-partitions", str(args.num_partitions), "--partition-index", str(args.partition_index)]
    if getattr(args, "single_writer_i_promise", False):
        argv.append("--single-writer-i-promise")
    return shlex.join(argv)


def zero_shot_note(config: Any) -> str | None:
    """What a newcomer should know after `make generate` on the untrained embedded model: it cannot hold a
    recommendation dialogue, and which command gives trained ones. None for any other model, with adapters, or
    for the teacher (protocol: reference), whose dialogues the protocol steers."""
    from interplay.prepare import default_model_dir

    if config.topology == "server":  # a server's model is named by the server, not here
        return None
    models = {Path(config.engine_args(role)["model"]).expanduser() for role in ("user", "recommender")}
    if models != {default_model_dir()} or config.user.adapter or config.recommender.adapter \
            or config.protocol == "reference":
        return None
    return ("  note: a zero-shot smoke run. Untrained, SmolLM2-135M cannot hold a recommendation dialogue; "
            "`make reproduce` trains both simulators on teacher dialogues and serves them reference-free "
            "(docs/reproduce.md)")


# The last exception line of the engine core's traceback, e.g. "ValueError: Available memory on node 0 ...".
_EXCEPTION_LINE = re.compile(r"\b(?:\w+\.)*([A-Z]\w*(?:Error|Exception)): (.+\S)")


def _root_cause(log_path: Path | None, start: int) -> str | None:
    """vLLM's start failure only says "Engine core initialization failed. See root cause above": the cause is the
    engine core's own exception, in the part of the log this run wrote."""
    if log_path is None or not log_path.is_file():
        return None
    with open(log_path, "rb") as f:
        f.seek(max(start, log_path.stat().st_size - (1 << 20)))
        lines = f.read().decode("utf-8", "replace").splitlines()
    causes = [m for line in lines if (m := _EXCEPTION_LINE.search(line)) and "root cause" not in m.group(2)]
    return f"{causes[-1].group(1)}: {causes[-1].group(2)}" if causes else None


def _interrupted(generation: Any) -> bool:
    """Did a first Ctrl-C stop the scheduler? (A generation without a scheduler never got that far.)"""
    scheduler = getattr(generation, "scheduler", None)
    return scheduler is not None and scheduler.is_stopping


def _see_log(log_path: Path | None, on_server: bool = False) -> str:
    if on_server:
        return "the server's own log says why"
    return f"vLLM's log: {log_path}" if log_path is not None else "vLLM's own messages are above"


def engine_layer(config: Any) -> tuple[Any, Any, type[Exception]]:
    """(check_config, open_engines, the error of a failed start): the in-process vLLM engines (engine.py), or the
    servers of topology: server (server.py, which needs no vLLM; they are checked when the run is prepared)."""
    if config.topology == "server":
        from interplay.generator.runtime.server import open_servers
        from interplay.generator.runtime.server_checks import ServerError, check_local

        return check_local, open_servers, ServerError
    from interplay.generator.runtime.engine import EngineStartError, check_config, open_engines

    return check_config, open_engines, EngineStartError


def _partition(args: argparse.Namespace) -> Partition | None:
    if args.num_partitions < 1:
        raise ConfigError(f"--num-partitions: must be at least 1 (got {args.num_partitions})")
    if args.partition_index is None:
        if args.num_partitions > 1:
            raise ConfigError("--partition-index: required with --num-partitions > 1 (or use --ray)")
        return None
    if not 0 <= args.partition_index < args.num_partitions:
        raise ConfigError(f"--partition-index: must be in 0..{args.num_partitions - 1} "
                          f"(got {args.partition_index})")
    return Partition(args.partition_index, args.num_partitions)


def _run_on_ray(config, args: argparse.Namespace) -> int:
    from interplay.distributed.ray_run import run_on_ray

    if args.partition_index is not None or getattr(args, "baseline", None):
        raise ConfigError("--ray: runs every partition itself; drop --partition-index / --baseline")
    if config.topology == "server":  # its workers open in-process engines
        raise ConfigError("--ray: not with topology: server; run the partitions as processes of their own "
                          "(--num-partitions N --partition-index I), each pointed at the server")
    if args.single_writer_i_promise:
        raise ConfigError("--single-writer-i-promise: not with --ray, whose workers open the output themselves; "
                          "write to s3:// or a shared filesystem")
    print(f"interplay: starting Ray ({args.address or 'local cluster'}); each worker's vLLM log: "
          f"{args.output}/logs/engine-p*.log, or under ~/.cache/interplay/logs/ on its node when the output is a "
          "URI",
          file=sys.stderr)
    complete, table = run_on_ray(config, args.output, num_workers=args.num_workers, address=args.address,
                                 progress=sys.stderr, overwrite=args.overwrite, max_restarts=args.max_restarts)
    print(table)
    return 0 if complete else 1
