"""`make reproduce`: the user split (fast), and the whole pipeline in its smallest size on the real engine (slow)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from experiments.reproduce import generate
from experiments.split import split_seeds, user_of
from fake_engine import fake_open_engines, make_clients
from interplay.generator.inputs.seeds import Seed, write_seeds
from interplay.generator.runtime.run import Generation
from interplay.prepare import default_model_dir

ROOT = Path(__file__).resolve().parents[1]


def rows(corpus: Path) -> list[dict]:
    return [r for shard in sorted(corpus.glob("*.parquet")) for r in pq.read_table(shard).to_pylist()]


def test_split_keeps_every_user_on_one_side(tmp_path: Path) -> None:
    seeds = [Seed(f"ml-{u}-{m}", f"user {u}", {"genres": ["Drama"]}, str(m)) for u in range(40) for m in range(3)]
    paths = split_seeds(write_seeds(tmp_path / "seeds.parquet", seeds), tmp_path / "split")
    sides = {side: {user_of(s) for s in pq.read_table(p).column("seed_id").to_pylist()} for side, p in paths.items()}
    assert sides["train"] and sides["eval"] and not sides["train"] & sides["eval"]
    assert sides["train"] | sides["eval"] == {str(u) for u in range(40)}
    record = json.loads((tmp_path / "split" / "split.json").read_text())
    assert set(record["eval_users"]) == sides["eval"] and record["num_seeds"]["eval"] == 3 * len(sides["eval"])
    again = split_seeds(tmp_path / "seeds.parquet", tmp_path / "again")  # deterministic
    assert pq.read_table(again["eval"]).equals(pq.read_table(paths["eval"]))


@pytest.mark.parametrize("corpora", ["foo", "trained,foo", ","])
def test_unknown_corpora_are_refused_before_any_work(tmp_path: Path, corpora: str, capsys) -> None:
    from experiments.reproduce import main

    with pytest.raises(SystemExit) as refused:
        main(["--corpora", corpora, "--out", str(tmp_path / "out")])
    assert refused.value.code == 2 and "--corpora: names among trained, zero_shot" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_complete_corpus_is_kept_only_for_the_config_that_made_it(tmp_path: Path, make_config) -> None:
    config = make_config(num_dialogues=4, dialogues_per_shard=2)
    out, logs = tmp_path / "corpora" / "c", tmp_path / "logs" / "c.log"
    asyncio.run(Generation(config, out).run(fake_open_engines(make_clients())))

    def files(pattern: str = "*") -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in out.glob(pattern)}

    shards = files("*.parquet")
    same, other = tmp_path / "same.yaml", tmp_path / "other.yaml"
    same.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    changed = config.model_dump(mode="json")
    changed["user"]["sampling"]["temperature"] = 0.5
    other.write_text(yaml.safe_dump(changed))
    generate(out, same, 4, (), logs)  # complete and the same: nothing to do, no engine started
    assert files("*.parquet") == shards and json.loads((out / "manifest.json").read_text())["status"] == "complete"
    made = files()
    with pytest.raises(SystemExit) as refused:
        generate(out, other, 4, (), logs)
    assert "differs in: config" in str(refused.value)
    assert files() == made  # the stale corpus is left as it was


@pytest.mark.slow
def test_the_whole_experiment_runs_in_its_smallest_size(tmp_path: Path) -> None:
    if not (default_model_dir() / "config.json").is_file():
        pytest.fail("the embedded model is not prepared: run `interplay prepare` (make test does)")
    proc = subprocess.run([sys.executable, "-m", "experiments.reproduce", "--tiny", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(result["corpora"]) == {"zero_shot", "zero_shot_candidates", "trained", "trained_user", "teacher",
                                      "baseline"}
    assert all(set(figures) >= {"success_rate", "match_score", "chance_match", "recall_at_1", "recall_at_10",
                                "leakage", "distinct_2_user", "distinct_2_recommender", "mean_turns",
                                "grounded_turn_share"} for figures in result["corpora"].values())
    assert {role: r["steps"] for role, r in result["train"].items()} == {"user": 2, "recommender": 2}
    protocols = {name: {r["protocol"] for r in rows(tmp_path / "corpora" / name)}
                 for name in ("zero_shot", "teacher", "baseline")}
    assert protocols == {"zero_shot": {"reference_free"}, "teacher": {"reference"}, "baseline": {"single_llm"}}
    trained = rows(tmp_path / "corpora" / "trained")
    assert {r["user_model"] for r in trained} == {str(tmp_path / "merged" / "user")}
    # The trained simulator is sampled as make generate serves it, the zero-shot one as the zero-shot config says.
    sampling = {name: yaml.safe_load((ROOT / "configs" / name).read_text())["user"]["sampling"]
                for name in ("embedded.yaml", "embedded-trained.yaml")}
    assert sampling["embedded.yaml"] != sampling["embedded-trained.yaml"]
    assert all(json.loads(r["user_sampling"]) == sampling["embedded-trained.yaml"] for r in trained)
    assert all(json.loads(r["user_sampling"]) == sampling["embedded.yaml"]
               for r in rows(tmp_path / "corpora" / "zero_shot"))
    assert all(len(t["candidate_item_ids"]) == 5 for r in trained for t in r["turns"] if t["role"] == "recommender")
    assert (tmp_path / "report" / "report.json").is_file()
