"""The paper's result in miniature (`make reproduce`): train both simulators on teacher dialogues, serve them
reference-free to evaluation users, and measure success against the zero-shot models.

    python -m experiments.reproduce [--quick | --tiny] [--out out/reproduce]
    REPRODUCE_QUICK=1 make reproduce            # a few minutes, for a try

1. split    MovieLens users into training and evaluation users (split.py; recorded in OUT/split/split.json)
2. teacher  `protocol: reference` on training users' seeds, its recommender suggesting from the candidates
            retrieval shows (`suggest_from: retrieved`): what the served recommender is shown, so it learns to pick
            from them; the user accepts the first suggestion that fits its target attributes
3. train    one LoRA adapter per role with `interplay train` on the teacher's dialogues, each on the view it is
            served with: the user simulator on its summary and attributes and the item cards (never the target,
            the notes or the shortlist; the accept marker opening its accepting turn), on the accepted dialogues and
            those that rejected every suggestion; the recommender on the accepted ones, with the candidates
            retrieval shows it when served with `num_candidates: 5` (the ones the teacher was shown)
4. merge    each adapter into full weights: vLLM's CPU LoRA path is about 4x slower than a plain model
5. evaluate the same evaluation users' seeds for every corpus: zero_shot, zero_shot_candidates, trained,
            trained_user (trained simulator, zero-shot recommender), teacher, baseline (single LLM)
6. report   `interplay report` of all corpora side by side (OUT/report/: report.md, report.json, plots)

Every step writes under OUT and is skipped when its output is already complete, so a rerun after a crash goes
on where it stopped. A corpus that another config, prompt, model or adapter made is refused, naming what differs
(use a new --out, or move it away, after such a change). Progress goes to stderr, each command's output to
OUT/logs/, and the last line of stdout is one JSON object: {"corpora": {name: headline figures}, "train":
{role: {steps, eval_loss_before, eval_loss_after, eval_curve}}, ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from experiments.split import split_seeds
from interplay.common.roles import ROLES

ROOT = Path(__file__).resolve().parents[1]
SERVED_CANDIDATES = 5
# name -> (teacher dialogues, eval dialogues per corpus, training steps, held-out loss every, max_turns, in flight)
SIZES = {"full": (300, 150, 75, 15, 8, 64), "quick": (32, 12, 8, 4, 8, 32), "tiny": (4, 2, 2, 1, 4, 4)}
# What each role learns from: the user simulator also from the teacher dialogues in which nothing it was offered
# fit (they end at max_turns, every suggestion rejected), so that no position in a dialogue means "accept"; the
# recommender only from dialogues that found what the user wanted.
TRAIN_OUTCOMES = {"user": "[accepted, max_turns]", "recommender": "[accepted]"}
# train.decision_weight of the user simulator: the loss on each turn's first tokens and its markers, where it accepts
# or rejects, counts this many times. The recommender's choice is held by its candidates; it trains unweighted.
DECISION_WEIGHT = 4
# How the trained simulators are sampled: as configs/embedded-trained.yaml (what `make generate` serves) says.
TRAINED_SAMPLING = {role: yaml.safe_load((ROOT / "configs" / "embedded-trained.yaml").read_text())[role]["sampling"]
                    for role in ROLES}
EVAL_CORPORA = ("trained", "zero_shot", "zero_shot_candidates", "trained_user", "teacher", "baseline")


def log(message: str) -> None:
    print(f"[reproduce {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def interplay(args: list[str], log_file: Path) -> None:
    """Run one interplay command; its output goes to `log_file`; a failure stops the experiment with its tail."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as f:
        f.write(f"$ interplay {' '.join(args)}\n".encode())
        f.flush()
        code = subprocess.run([sys.executable, "-m", "interplay", *args], stdout=f, stderr=subprocess.STDOUT,
                              cwd=ROOT).returncode
    if code != 0:
        tail = log_file.read_text(errors="replace").splitlines()[-15:]
        raise SystemExit(f"reproduce: `interplay {args[0]}` failed (exit {code}); {log_file}:\n" + "\n".join(tail))


def generate(out: Path, config: Path, num: int, extra: Sequence[str], log_file: Path) -> None:
    """`num` dialogues of `config` in `out`, always through `interplay generate`: it returns at once for a complete
    corpus, resumes a stopped one, and refuses one that other prompts, models, adapters, seeds or settings made,
    naming what differs. A corpus kept because its manifest says complete would outlive such a change."""
    interplay(["generate", "--config", str(config), "--output", str(out), "--num-dialogues", str(num), *extra],
              log_file)


class Experiment:
    def __init__(self, out: Path, size: str, corpora: Sequence[str] = EVAL_CORPORA, **overrides: int | None):
        self.out, self.size, self.corpora = out, size, tuple(corpora)
        (self.num_teacher, self.num_eval, self.steps, self.eval_steps, self.max_turns,
         self.in_flight) = SIZES[size]
        self.decision_weight = DECISION_WEIGHT
        for name, value in overrides.items():  # --teacher, --eval, --steps, --decision-weight
            if value is not None:
                setattr(self, name, value)
        from interplay.prepare import default_model_dir, prepare_seeds

        self.base_model = str(default_model_dir())
        if not (Path(self.base_model) / "config.json").is_file():
            raise SystemExit("reproduce: run `interplay prepare` (or `make prepare`) first")
        self.seeds, self.catalog = prepare_seeds()  # the embedded default's MovieLens build (cached)

    def path(self, *parts: str) -> Path:
        return self.out.joinpath(*parts)

    # -- configs --------------------------------------------------------------------------------------------

    def config(self, name: str, *, seeds: Path, protocol: str = "reference_free", candidates: int = 0,
               models: dict[str, str] | None = None) -> Path:
        """OUT/configs/NAME.yaml: the embedded default on these seeds; `models` (role -> model dir) serves each
        role from its own engine (topology: separate)."""
        data = yaml.safe_load((ROOT / "configs" / "embedded.yaml").read_text())
        data.update(protocol=protocol, max_in_flight=self.in_flight, dialogues_per_shard=50)
        data["seeds"] = {"source": "file", "path": str(seeds), "catalog": str(self.catalog)}
        data["conversation"]["max_turns"] = self.max_turns
        data["recommender"]["num_candidates"] = candidates if protocol == "reference_free" else None
        if protocol == "reference":  # the teacher suggests from what the served recommender will be shown
            data["recommender"]["suggest_from"] = "retrieved"
        data["engine"]["kv_cache_memory_bytes"] = 2 << 30  # GiB; a separate topology holds two of these
        if models:
            data["topology"] = "separate"
            model = data["engine"].pop("model")
            for role in ROLES:
                data[role]["engine"] = {"model": models.get(role, model)}
            for role in models:  # a trained role is sampled as make generate serves it
                data[role]["sampling"] = TRAINED_SAMPLING[role]
        path = self.path("configs", f"{name}.yaml")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    # -- steps ----------------------------------------------------------------------------------------------

    def generate(self, name: str, config: Path, num: int, *extra: str) -> Path:
        out = self.path("corpora", name)
        log(f"{name}: {num} dialogues")
        generate(out, config, num, extra, self.path("logs", f"{name}.log"))
        return out

    def train(self, role: str, teacher: Path, served: Path) -> dict[str, Any]:
        adapter = self.path("adapters", role)
        # The smallest size only tests the pipeline: its 4 teacher dialogues of 4 turns give the user one reply to
        # a suggestion, and may accept nothing, which would leave the recommender nothing to train on.
        outcomes = "[accepted, max_turns]" if self.size == "tiny" else TRAIN_OUTCOMES[role]
        weight = self.decision_weight if role == "user" else 1
        if not (adapter / "loss.json").is_file():
            log(f"train {role}: {self.steps} steps on the teacher's dialogues ({outcomes}, decision weight {weight})")
            interplay(["train", "--role", role, "--data", str(teacher), "--output", str(adapter),
                       "--base-model", self.base_model, "--prompts-from", str(served), "--overwrite",
                       "--set", f"data.outcomes={outcomes}", "--set", f"train.max_steps={self.steps}",
                       "--set", f"train.eval_steps={self.eval_steps}", "--set", "train.learning_rate=1e-3",
                       "--set", "train.max_seq_len=768", "--set", f"train.decision_weight={weight}"],
                      self.path("logs", f"train-{role}.log"))
        summary = json.loads((adapter / "loss.json").read_text())
        return {"steps": summary["steps"], "eval_loss_before": summary["eval"]["loss_before"],
                "eval_loss_after": summary["eval"]["loss_after"], "eval_curve": summary["eval"].get("curve"),
                "seconds_per_step": summary["seconds_per_step"], "num_train_examples": summary["num_train_examples"],
                "decision_weight": summary.get("decision_weight", 1.0)}

    def merge(self, role: str) -> str:
        merged = self.path("merged", role)
        if not (merged / "config.json").is_file():
            log(f"merge {role}")
            interplay(["merge", "--adapter", str(self.path("adapters", role)), "--output", str(merged),
                       "--overwrite"], self.path("logs", f"merge-{role}.log"))
        return str(merged)

    def run(self) -> dict[str, Any]:
        started = time.time()
        seeds = split_seeds(self.seeds, self.path("split"))
        split = json.loads(self.path("split", "split.json").read_text())
        log(f"split: {len(split['train_users'])} training users, {len(split['eval_users'])} evaluation users")
        teacher = self.generate("teacher-train", self.config("teacher-train", seeds=seeds["train"],
                                                              protocol="reference"), self.num_teacher)
        # The configs the trained roles are served with: training renders exactly their prompts and candidates.
        merged = {role: str(self.path("merged", role)) for role in ROLES}
        trained = self.config("trained", seeds=seeds["eval"], candidates=SERVED_CANDIDATES, models=merged)
        train = {role: self.train(role, teacher, trained) for role in ROLES}
        for role in ROLES:
            self.merge(role)
        eval_seeds, n = seeds["eval"], self.num_eval
        configs = {  # name -> (config, extra arguments); the headline corpus first, so a stopped run has it
            "trained": (trained, ()),
            "zero_shot": (self.config("zero_shot", seeds=eval_seeds), ()),
            "zero_shot_candidates": (self.config("zero_shot_candidates", seeds=eval_seeds,
                                                 candidates=SERVED_CANDIDATES), ()),
            "trained_user": (self.config("trained_user", seeds=eval_seeds, candidates=SERVED_CANDIDATES,
                                         models={"user": merged["user"]}), ()),
            "teacher": (self.config("teacher", seeds=eval_seeds, protocol="reference"), ()),
            "baseline": (self.config("baseline", seeds=eval_seeds), ("--baseline", "single-llm")),
        }
        corpora = {name: self.generate(name, config, n, *extra) for name, (config, extra) in configs.items()
                   if name in self.corpora}
        log("report")
        report_dir = self.path("report")
        interplay(["report", *map(str, corpora.values()), "--output", str(report_dir), "--catalog",
                   str(self.catalog)], self.path("logs", "report.log"))
        from interplay.report.summary import headline

        figures = headline(json.loads((report_dir / "report.json").read_text()))
        return {"corpora": figures, "train": train, "size": self.size,
                "num_dialogues": {"teacher_train": self.num_teacher, "per_eval_corpus": n},
                "num_users": {"train": len(split["train_users"]), "eval": len(split["eval_users"])},
                "report": str(report_dir), "wall_s": round(time.time() - started, 1),
                "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="out/reproduce", help="where everything goes (default out/reproduce)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a few minutes: small corpora, few steps")
    size.add_argument("--tiny", action="store_true", help="the pipeline only, in the smallest sizes (tests)")
    full = SIZES["full"]
    parser.add_argument("--teacher", type=int, metavar="N", help=f"teacher dialogues to train on (full: {full[0]})")
    parser.add_argument("--eval", type=int, metavar="N", help=f"dialogues per evaluation corpus (full: {full[1]})")
    parser.add_argument("--steps", type=int, metavar="N", help=f"training steps per role (full: {full[2]})")
    parser.add_argument("--decision-weight", type=float, metavar="W",
                        help=f"train.decision_weight of the user simulator (default {DECISION_WEIGHT})")
    parser.add_argument("--corpora", default=",".join(EVAL_CORPORA), metavar="NAME,...",
                        help="the evaluation corpora to make and report (default: all of them)")
    args = parser.parse_args(argv)
    corpora = [c.strip() for c in args.corpora.split(",") if c.strip()]
    if not corpora or not set(corpora) <= set(EVAL_CORPORA):
        parser.error(f"--corpora: names among {', '.join(EVAL_CORPORA)}, not {args.corpora!r}")
    name = "tiny" if args.tiny else "quick" if args.quick or os.environ.get("REPRODUCE_QUICK") == "1" else "full"
    result = Experiment(Path(args.out), name, corpora, num_teacher=args.teacher, num_eval=args.eval,
                        steps=args.steps, decision_weight=args.decision_weight).run()
    (Path(args.out) / "result.json").write_text(json.dumps(result, indent=2) + "\n")  # what experiments.ship reads
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
