"""`interplay train`: fine-tune one role's LoRA adapter on dialogue corpora, with the prompts the generator serves.

    interplay train --role user --data out/train-corpus --output out/adapters/user-simulator
    interplay train --role recommender --data pearl/train.json --output adapters/recommender \\
        --base-model meta-llama/Llama-3.1-8B-Instruct --set train.max_seq_len=2048
    interplay train --config train.yaml [--set train.learning_rate=1e-4 ...]
    interplay train --role user --data D --output O --print-config > train.yaml   # a config file to start from

Flags override the config file, and --set overrides both. Nothing heavy is imported until the command runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from interplay.generator.config import parse_override
from interplay.training.config import FORMATS, load_train_config, prompts_from_generation_config
from interplay.training.data import load_training_data
from interplay.training.output_dir import check_output

HELP = "fine-tune one role's LoRA adapter (user simulator or recommender) on dialogue corpora"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="training config YAML (see --print-config)")
    parser.add_argument("--role", choices=["user", "recommender"], help="which simulator to train")
    parser.add_argument("--data", nargs="+", metavar="PATH",
                        help="interplay corpus directories, PEARL, ReDial, LLM-REDIAL, ShareGPT, or JSONL/Parquet "
                             "of messages (see docs/data.md)")
    parser.add_argument("--format", choices=FORMATS, help="data format (default: auto, from the content)")
    parser.add_argument("--catalog", help="ReDial and LLM-REDIAL: take target attributes from this catalog "
                                          "(Parquet or JSONL, as the generator reads it)")
    parser.add_argument("--output", help="adapter directory to write")
    parser.add_argument("--base-model", help="local model directory or hub id (default: the embedded SmolLM2)")
    parser.add_argument("--prompts-from", metavar="GENERATION_CONFIG",
                        help="take item noun, markers and system prompts from the generation config that will "
                             "serve the adapter (they must match)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config value, e.g. --set train.max_steps=30 --set lora.r=8")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing adapter directory")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--show-example", action="store_true",
                        help="print the first training example, loss spans in [[...]], and exit")


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if args.prompts_from:
        out.update({f"prompts.{k}": v for k, v in prompts_from_generation_config(args.prompts_from).items()})
    for flag, key in (("role", "role"), ("data", "data.paths"), ("format", "data.format"),
                      ("catalog", "data.catalog"), ("output", "output"), ("base_model", "base_model")):
        if getattr(args, flag) is not None:
            out[key] = getattr(args, flag)
    out.update(parse_override(text) for text in args.set)
    return out


def main(args: argparse.Namespace) -> int:
    config = load_train_config(args.config, overrides(args))
    if args.print_config:
        print(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), end="")
        return 0
    data = config.data
    if not args.show_example:  # before the data is read, which may take a while
        check_output(Path(config.output).expanduser(), args.overwrite)
    dialogues, load_stats = load_training_data(data.paths, fmt=data.format, outcomes=data.outcomes,
                                               min_turns=data.min_turns, max_dialogues=data.max_dialogues,
                                               catalog=data.catalog)
    print(f"interplay: {load_stats.describe()}", file=sys.stderr)
    if args.show_example:
        from interplay.training.examples import describe
        from interplay.training.trainer import load_tokenizer, prepare_examples

        tokenizer = load_tokenizer(config.base_model_path)
        examples, report = prepare_examples(config, tokenizer, dialogues, load_stats)
        print(describe(tokenizer, examples[0]))
        print(f"\n({report['examples']['num_examples']} examples; loss on the text in [[...]])", file=sys.stderr)
        return 0
    from interplay.training.trainer import run_training

    summary = run_training(config, dialogues, load_stats, overwrite=args.overwrite)
    ev = summary["eval"]
    print(f"{config.role} adapter: {config.output}\n"
          f"  {summary['steps']} steps in {summary['train_seconds']} s ({summary['seconds_per_step']} s/step), "
          f"{summary['num_train_examples']} training examples\n"
          f"  {ev['split']} loss ({ev['num_examples']} dialogues): {ev['loss_before']:.3f} before, "
          f"{ev['loss_after']:.3f} after\n"
          f"  loss curve: {config.output}/loss.png")
    return 0
