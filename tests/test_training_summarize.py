"""Tests for `interplay summarize`: parsing the model's answers, keeping the target out, fitting long personas,
and the command end to end on the PEARL fixture with a fake engine (the real one runs in test_training_slow.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

import interplay.generator.runtime.engine as engine_module
from interplay.cli import main
from interplay.generator.dialogue.conversation import Completion
from interplay.training.data import Dialogue, load_dialogues
from interplay.training.summarize import Summarizer, clean_summary, parse_attributes

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "training"
DATASETS = FIXTURES.parent / "datasets"
PEARL = FIXTURES / "pearl_train.json"


class FakeClient:
    """RoleClient's interface: a token per 4 characters, canned answers per kind of request."""

    def __init__(self, *, max_model_len: int = 2048, max_tokens: int = 160, fail: str | None = None):
        self.max_model_len, self.max_tokens, self.model, self.fail = max_model_len, max_tokens, "fake-model", fail
        self.prompts: dict[str, str] = {}
        self.rendered: list[str] = []
        self.in_flight = self.max_in_flight = 0

    def render(self, messages: list[dict[str, str]]) -> list[int]:
        # the first "token" says which rendered text this is
        self.rendered.append("".join(m["content"] for m in messages))
        return [len(self.rendered) - 1] * (1 + len(self.rendered[-1]) // 4)

    async def generate(self, request_id: str, prompt_token_ids: list[int], seed: int | None) -> Completion:
        self.prompts[request_id] = self.rendered[prompt_token_ids[0]]
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await asyncio.sleep(0.01)
        self.in_flight -= 1
        if self.fail and request_id.startswith(self.fail):
            raise RuntimeError("request failed")
        if request_id.startswith("sum-"):
            text = "Loves: slow, obsessive thrillers like Zodiac. Dislikes: sweet romances. Prisoners is ideal."
        else:
            text = "- genres: Thriller, Mystery\n- **mood**: dark, tense\nera: none\ntitle: Prisoners\nblah"
        return Completion(text, len(prompt_token_ids), 20, 0, "stop")


def test_parse_attributes():
    assert parse_attributes("genres: Comedy, Drama\nmood: light; warm\n", None) == {
        "genres": ["Comedy", "Drama"], "mood": ["light", "warm"]}
    assert parse_attributes("1. Genres: Horror.\n* Era: 1980s", None) == {"genres": ["Horror"], "era": ["1980s"]}
    # free text is still usable conditioning; the target never gets in
    assert parse_attributes("Something scary and fun", None) == {"wants": ["Something scary and fun"]}
    assert parse_attributes("Here is what they want:\nSomething scary", None) == {"wants": ["Something scary"]}
    assert parse_attributes("like: Prisoners, Se7en", "Prisoners") == {"like": ["Se7en"]}
    assert parse_attributes("Prisoners", "prisoners") is None
    assert parse_attributes("", None) is None


def test_clean_summary_drops_sentences_naming_the_target():
    assert clean_summary("Loves thrillers. Prisoners is perfect!\nDislikes romance.", "Prisoners") == \
        "Loves thrillers. Dislikes romance."
    assert clean_summary("Prisoners.", "Prisoners") is None
    assert clean_summary("Loves thrillers.", None) == "Loves thrillers."
    # PEARL's ground truth is "Title (Year)"; summaries name it without the year
    assert clean_summary("Loves thrillers. Prisoners is ideal.", "Prisoners (2013)") == "Loves thrillers."


def run_one(client: FakeClient, dialogue: Dialogue) -> Dialogue:
    summarizer = Summarizer(client, item="movie", run_seed=0, max_in_flight=4)
    return asyncio.run(summarizer.one(0, dialogue))


def test_long_persona_is_cut_to_fit_and_target_kept_out():
    dialogue = load_dialogues([PEARL], keep_persona=True)[0][0]
    long = Dialogue(dialogue.dialogue_id, dialogue.turns, persona="I loved Zodiac. " * 2000,
                    target_item="Prisoners")
    client = FakeClient(max_model_len=1024)
    result = run_one(client, long)
    assert result.preference_summary == "Loves: slow, obsessive thrillers like Zodiac. Dislikes: sweet romances."
    assert result.target_attributes == {"genres": ["Thriller", "Mystery"], "mood": ["dark", "tense"]}
    assert len(client.prompts["sum-0"]) // 4 <= 1024 - 160  # cut to the budget
    assert "I loved Zodiac." in client.prompts["sum-0"]
    assert "Prisoners" not in client.prompts["sum-0"]  # the summary is written without the target
    assert "finally wanted: Prisoners" in client.prompts["attr-0"]  # ...the attributes with it, then filtered
    assert "Something dark and suspenseful" in client.prompts["attr-0"]


def test_without_persona_the_summary_comes_from_the_users_turns():
    d = Dialogue("x", (("user", "I want a western."), ("recommender", "Unforgiven (1992).")))
    client = FakeClient()
    run_one(client, d)
    assert "I want a western." in client.prompts["sum-0"] and "Unforgiven" not in client.prompts["sum-0"]


def test_failed_request_costs_one_field():
    d = Dialogue("x", (("user", "I want a western."),), target_attributes={"genres": ["Western"]})
    result = run_one(FakeClient(fail="sum-"), d)
    assert result.preference_summary is None and result.target_attributes == {"genres": ["Western"]}


@pytest.fixture
def gen_config(tmp_path: Path) -> Path:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    path = tmp_path / "gen.yaml"
    path.write_text(yaml.safe_dump({"engine": {"model": str(model)}, "max_in_flight": 3}))
    return path


def test_summarize_command_writes_a_training_ready_parquet(tmp_path: Path, gen_config: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]):
    client = FakeClient()
    seen = {}

    @contextlib.asynccontextmanager
    async def fake_open_engines(config):
        seen["config"] = config
        yield {"user": client, "recommender": client}

    monkeypatch.setattr(engine_module, "open_engines", fake_open_engines)
    monkeypatch.setattr(engine_module, "check_config", lambda config: None)
    out = tmp_path / "pearl.parquet"
    args = ["summarize", "--data", str(PEARL), "--config", str(gen_config), "--output", str(out), "--verbose"]
    assert main(args) == 0
    config = seen["config"]
    assert config.user.adapter is None and config.sampling("user")["temperature"] == 0.2
    assert client.max_in_flight <= 3
    rows = pq.read_table(out).to_pylist()
    assert [r["dialogue_id"] for r in rows] == ["0", "1"]
    assert rows[0]["messages"][0] == {"role": "user", "content": "Hi there! I'm in the mood to watch a movie. "
                                                                 "Can you recommend something?"}
    assert rows[0]["target_item"] == "Prisoners" and rows[0]["summary_model"] == "fake-model"
    assert "Prisoners" not in str(rows[0]["preference_summary"]) + str(rows[0]["target_attributes"])
    assert "Prisoners" in rows[1]["preference_summary"]  # not the target of that dialogue: kept
    # it is training data for the user simulator now
    dialogues, stats = load_dialogues([out])
    assert len(dialogues) == 2 and not stats.skipped
    assert dialogues[0].preference_summary and dialogues[0].target_attributes["genres"] == ["Thriller", "Mystery"]
    assert main(args) == 0  # complete: a rerun has nothing to do
    assert "is complete: 2 dialogues" in capsys.readouterr().out


def fake_engine(monkeypatch: pytest.MonkeyPatch, client: FakeClient) -> None:
    @contextlib.asynccontextmanager
    async def fake_open_engines(config):
        yield {"user": client, "recommender": client}

    monkeypatch.setattr(engine_module, "open_engines", fake_open_engines)
    monkeypatch.setattr(engine_module, "check_config", lambda config: None)


def test_pearl_as_released_gets_only_a_summary_and_keeps_the_title_out_without_its_year(
        tmp_path: Path, gen_config: Path, monkeypatch: pytest.MonkeyPatch):
    client = FakeClient()
    fake_engine(monkeypatch, client)
    out = tmp_path / "summarized"
    assert main(["summarize", "--data", str(DATASETS / "pearl" / "train.json"), "--config", str(gen_config),
                 "--output", str(out), "--verbose"]) == 0
    assert sorted(client.prompts) == ["sum-0", "sum-1", "sum-2"]  # attributes come from gt_*: no request
    assert "Zodiac (2007):\n[Like]" in client.prompts["sum-0"]  # reviews under the titles they review
    dialogues, stats = load_dialogues([out])
    assert [d.ending for d in dialogues] == ["accept", None, "accept"]
    first = dialogues[0]
    assert first.num_context_turns == 2  # the opening pair stays context through the summary file
    assert first.target_attributes["director"] == ["Denis Villeneuve"]
    # the canned summary names "Prisoners" without a year: the target is "Prisoners (2013)", so it is dropped
    assert first.preference_summary == "Loves: slow, obsessive thrillers like Zodiac. Dislikes: sweet romances."


class Crash(Exception):
    pass


def test_summarize_writes_parts_and_a_rerun_resumes_after_a_crash(tmp_path: Path, gen_config: Path,
                                                                  monkeypatch: pytest.MonkeyPatch):
    import interplay.training.summary_output as output_module

    client = FakeClient()
    fake_engine(monkeypatch, client)
    real_write, calls = output_module.SummaryOutput.write_part, []

    def crash_on_second_part(self, dialogues, model):
        calls.append(len(dialogues))
        if len(calls) == 2:
            raise Crash
        real_write(self, dialogues, model)

    monkeypatch.setattr(output_module.SummaryOutput, "write_part", crash_on_second_part)
    out = tmp_path / "summarized"
    args = ["summarize", "--data", str(DATASETS / "pearl" / "train.json"), "--config", str(gen_config),
            "--output", str(out), "--part-size", "1", "--verbose"]
    with pytest.raises(Crash):
        main(args)
    assert sorted(p.name for p in out.glob("*.parquet")) == ["part-00000.parquet"]
    monkeypatch.setattr(output_module.SummaryOutput, "write_part", real_write)
    client.prompts.clear()
    assert main(args) == 0
    assert sorted(client.prompts) == ["sum-1", "sum-2"]  # the written part is not summarized again
    assert [d.dialogue_id for d in load_dialogues([out])[0]] == ["0", "1", "2"]
    progress = json.loads((out / "_progress.json").read_text())
    assert progress["complete"] and [p["num_dialogues"] for p in progress["parts"]] == [1, 1, 1]
    assert progress["load"]["endings"] == {"accepted": 2, "gave_up": 0, "unknown": 1}
    # other input on the same output: refused, not mixed in
    other = [*args[:2], str(FIXTURES / "dialogues.jsonl"), *args[3:]]
    assert main(other) == 2
