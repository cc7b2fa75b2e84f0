"""interplay: conversational-recommendation corpora from two LLMs talking on vLLM.

One subcommand per module, each with HELP, add_arguments(parser) and main(args):

    interplay prepare                                         # embedded model + MovieLens seeds into the cache
    interplay generate --config configs/embedded.yaml --output out/embedded [--num-dialogues N] [--set K=V ...]
    interplay show out/embedded [-n 3] [--outcome accepted]
    interplay train --role user|recommender --data D... --output ADAPTER [--config F] [--set K=V ...]
    interplay merge --adapter ADAPTER --output MODEL_DIR
    interplay summarize --data D... --config configs/embedded.yaml --output summarized
    interplay export out/embedded --format redial|sharegpt|pearl --output FILE

Input problems exit with status 2 and one message before any work starts; a run that stopped before every
conversation was written (interrupt, engine death) exits with 1 and resumes when rerun.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from interplay.errors import INPUT_ERRORS

# Subcommand -> module. Modules must be cheap to import (no vLLM or torch at module level).
COMMANDS = {
    "prepare": "interplay.prepare",
    "generate": "interplay.generate",
    "show": "interplay.show",
    "status": "interplay.distributed.status",
    "report": "interplay.report.cli",
    "train": "interplay.training.cli",
    "merge": "interplay.training.merge",
    "summarize": "interplay.training.summarize",
    "export": "interplay.export",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="interplay", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        module.add_arguments(sub.add_parser(name, help=module.HELP, description=module.HELP))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return importlib.import_module(COMMANDS[args.command]).main(args)
    except INPUT_ERRORS as e:
        print(f"interplay: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
