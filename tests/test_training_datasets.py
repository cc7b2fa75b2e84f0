"""Tests for reading the released CRS datasets: PEARL (and its generator output), ReDial, LLM-REDIAL, and telling
formats apart. The fixtures (tests/fixtures/datasets/) are small files in exactly the released shapes, with one
bad record per reason next to good ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from interplay.training.data import detect_format, load_dialogues
from interplay.training.errors import TrainingInputError

DATASETS = Path(__file__).resolve().parent / "fixtures" / "datasets"
PEARL, REDIAL, LLM_REDIAL = DATASETS / "pearl" / "train.json", DATASETS / "redial" / "train_data.jsonl", \
    DATASETS / "llm_redial"
CATALOG = DATASETS / "redial" / "catalog.jsonl"


def test_pearl_as_released():
    dialogues, stats = load_dialogues([PEARL], keep_persona=True)
    assert stats.num_records == 6
    assert dict(stats.skipped) == {"unknown speaker 'Narrator'": 1, "empty dialogue": 1, "empty turn": 1}
    accepted, unfinished, predicted = dialogues
    # the seeker accepts the ground truth, named without its year; [EOD] is an ending, not text
    assert accepted.ending == "accept" and accepted.target_item == "Prisoners (2013)"
    assert accepted.turns[-1] == ("user", "That sounds gripping. I'll watch Prisoners tonight, thanks!")
    assert not any("[EOD]" in text for d in dialogues for _, text in d.turns)
    assert accepted.target_attributes == {"genres": ["Crime", "Drama", "Mystery"], "director": ["Denis Villeneuve"],
                                          "cast": ["Hugh Jackman", "Jake Gyllenhaal"]}
    assert unfinished.ending is None and "cast" not in unfinished.target_attributes  # gt_cast may be empty
    # the fixed opening pair is context
    assert accepted.num_context_turns == 2 and accepted.turns[0][1].startswith("Hi there! I'm in the mood")
    # the persona: each review under the title it reviews; no summary yet
    assert accepted.persona.startswith("Zodiac (2007):\n[Like] The slow-burning") and "The Notebook (2004):\n" \
        in accepted.persona
    assert accepted.preference_summary is None
    # PEARL's generator output: `prediction`, a closing "[EOD]" on a line of its own
    assert predicted.dialogue_id == "2" and predicted.ending == "accept"
    assert predicted.turns[-1] == ("user", "Perfect, that's the one.")
    assert stats.as_dict()["endings"] == {"accepted": 2, "gave_up": 0, "unknown": 1}


def test_redial():
    dialogues, stats = load_dialogues([REDIAL], catalog=CATALOG)
    assert stats.num_records == 7
    assert dict(stats.skipped) == {"unresolvable @id": 1, "invalid JSON": 1, "speaker outside the two roles": 1,
                                   "empty dialogue": 1}
    first, no_movies, heat = dialogues
    assert first.dialogue_id == "20001"
    # the recommender's opening is dropped, the seeker's consecutive messages joined, @ids become titles
    assert first.turns[0] == ("user", "hey\nI like comedies, I loved Beverly Hills Cop (1984)")
    assert first.turns[1] == ("recommender", "Have you seen Super Troopers (2001) ?")  # double space gone
    # accepted: the last movie the recommender suggested that the seeker liked; the goodbyes after it dropped
    assert first.ending == "accept" and first.target_item == "Police Academy (1984)"
    assert first.turns[-1] == ("user", "I'll try Police Academy (1984) then, thanks!")
    assert first.target_attributes == {"genres": ["Comedy"], "decade": ["1980s"]}  # from the catalog
    assert no_movies.ending is None and no_movies.target_attributes is None
    assert heat.ending == "accept" and heat.target_item == "Heat (1995)"  # the recommender's questionnaire
    assert stats.repaired["dropped the recommender's turns after acceptance"] == 1


def test_redial_without_catalog_has_no_attributes():
    dialogues, _ = load_dialogues([REDIAL])
    assert all(d.target_attributes is None for d in dialogues)


def test_llm_redial_every_domain():
    dialogues, stats = load_dialogues([LLM_REDIAL])
    assert [d.dialogue_id for d in dialogues] == ["Books/7", "Movie/1", "Movie/2"]
    assert dict(stats.skipped) == {"unknown speaker 'Narrator'": 1}
    books, inception, blade = dialogues
    assert books.target_item == "Neuromancer" and books.ending == "accept"
    assert books.preference_summary == "Likes: Dune; dislikes: Emma."
    assert inception.turns[0] == ("user", "I loved The Matrix but Titanic bored me. Any mind-bending sci-fi?")
    assert inception.ending == "accept" and "Inception" not in inception.preference_summary
    assert blade.ending is None  # it ends on the agent's turn
    assert detect_format(LLM_REDIAL / "Movie") == "llm-redial"
    assert len(load_dialogues([LLM_REDIAL / "Movie"])[0]) == 2


def test_formats_are_told_apart():
    assert detect_format(PEARL) == "pearl"
    assert detect_format(REDIAL) == "redial"  # although its records have `messages`
    assert detect_format(LLM_REDIAL) == "llm-redial"


@pytest.mark.parametrize("content, why", [
    ('{"text": "hello"}\n', "no field that says what it is"),
    ('{"dialogue": ["Seeker: hi"]}\n{"messages": []}\n', "records of several formats (pearl (record 0), "
                                                          "messages (record 1))"),
])
def test_unknown_or_mixed_format_is_one_message_naming_the_readable_ones(tmp_path: Path, content: str, why: str):
    path = tmp_path / "data.jsonl"
    path.write_text(content)
    with pytest.raises(TrainingInputError) as e:
        load_dialogues([path])
    assert why in str(e.value)
    assert "readable formats: corpus" in str(e.value) and "redial" in str(e.value) and "sharegpt" in str(e.value)


def test_a_stray_record_of_another_format_is_skipped_not_the_file(tmp_path: Path):
    records = json.loads(PEARL.read_text())[:2] * 5 + [{"messages": [{"role": "user", "content": "hi"}]}]
    path = tmp_path / "train.json"
    path.write_text(json.dumps(records))
    dialogues, stats = load_dialogues([path])
    assert len(dialogues) == 10 and dict(stats.skipped) == {"missing dialogue": 1}


def test_redial_in_its_parquet_copy_shape(tmp_path: Path):
    row = json.loads(REDIAL.read_text().splitlines()[-1])  # accepted Heat, through the recommender's answers
    row["movieMentions"] = [{"movieId": "5", "movieName": "Heat (1995)"}]
    row["respondentQuestions"] = [{"movieId": "5", "suggested": 1, "seen": 0, "liked": 1}]
    path = tmp_path / "redial.jsonl"
    path.write_text(json.dumps(row) + "\n")
    (dialogue,), _ = load_dialogues([path])
    assert dialogue.turns[1] == ("recommender", "Heat (1995) is the best heist movie")
    assert dialogue.ending == "accept" and dialogue.target_item == "Heat (1995)"
