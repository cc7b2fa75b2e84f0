"""One writer process for the concurrent-writer tests (tests/test_writers.py): the real Generation and writer on
the fake engine.

    python tests/writer_runner.py CONFIG_JSON OUT_DIR [--partition I N] [--overwrite] [--hold] [--delay S]

Prints "opened <pid>" once the output is opened (its lease taken). --hold then waits to be killed; otherwise it
generates, each request taking --delay seconds. Exit status: 0 complete, 1 incomplete, 3 the output was refused
(the message on stderr).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

from fake_engine import fake_open_engines, make_clients
from interplay.common.partition import Partition
from interplay.generator.config import GenerateConfig
from interplay.generator.output.writer import OutputError
from interplay.generator.runtime.run import Generation


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("out")
    parser.add_argument("--partition", type=int, nargs=2)
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--hold", action="store_true")
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args(argv)
    config = GenerateConfig.model_validate(json.loads(Path(args.config).read_text()))
    partition = Partition(*args.partition) if args.partition else None
    try:
        generation = Generation(config, args.out, overwrite=args.overwrite, partition=partition)
    except OutputError as e:
        print(f"refused: {e}", file=sys.stderr)
        return 3
    print(f"opened {os.getpid()}", flush=True)
    if args.hold:
        time.sleep(600)
    delay = {"delay": args.delay} if args.delay else {}
    try:
        manifest = asyncio.run(generation.run(fake_open_engines(make_clients(user=delay, recommender=delay))))
    except OutputError as e:
        print(f"stopped: {e}", file=sys.stderr)
        return 3
    return 0 if manifest["status"] == "complete" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
