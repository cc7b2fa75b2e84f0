"""Item cards (user.item_cards): what they say, that training renders them token for token as the generator serves
them, that they never carry the target, and the bad input around them."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import make_catalog, make_seeds
from interplay.generator.config import ConfigError, load_config
from interplay.generator.dialogue.conversation import Conversation, Turn
from interplay.generator.dialogue.teacher import wanted_phrase
from interplay.generator.inputs.cards import ItemCards
from interplay.generator.inputs.catalog import Catalog
from interplay.generator.inputs.items import Item
from interplay.generator.inputs.seeds import Seed, write_seeds
from interplay.generator.runtime.run import Generation, prompt_messages
from interplay.training.config import PromptSettings, prompts_from_generation_config
from interplay.training.data import Dialogue
from interplay.training.errors import TrainingInputError
from interplay.training.examples import build_example, candidate_view, end_of_turn_ids, item_cards, loss_spans

ATTRS = {"genres": ["Crime"], "decade": ["1990s"]}
TURNS = (("user", "A tense crime movie, please."), ("recommender", "Try Heat (1995), a heist classic."),
         ("user", "Seen it. Something funny?"), ("recommender", "Fargo (1996) or Groundhog Day (1993) then."),
         ("user", "Fargo it is."))
DIALOGUE = Dialogue("d1", TURNS, "Loves: Alien (1979).", ATTRS, ending="accept", target_item="m3")


def test_a_card_names_the_item_and_its_values() -> None:
    cards = ItemCards(Catalog([Item("i1", "Jackie Brown", 1997, {"genres": ["Crime", "Drama", "Thriller"],
                                                                 "decade": ["1990s"]})]))
    assert cards.card("i1") == "Jackie Brown (1997): Crime, Drama, Thriller; 1990s"
    assert cards.note(["i1", "i1"]) == "\n\n(Jackie Brown (1997): Crime, Drama, Thriller; 1990s)"
    assert cards.note([]) == ""


def test_a_card_made_with_fit_says_whether_the_item_fits_what_the_simulator_wants() -> None:
    brown = Item("i1", "Jackie Brown", 1997, {"genres": ["Crime", "Drama"], "decade": ["1990s"]})
    toy = Item("i2", "Toy Story", 1995, {"genres": ["Animation", "Comedy"], "decade": ["1990s"]})
    cards = ItemCards(Catalog([brown, toy]), fit=True)
    wanted = {"genres": ["Crime", "War"], "decade": ["1990s"]}  # an attribute is met by any of its values
    assert cards.note(["i1"], wanted) == "\n\n(Jackie Brown (1997): Crime, Drama; 1990s. Fits what you want.)"
    assert cards.note(["i2", "i1"], wanted) == (
        "\n\n(Toy Story (1995): Animation, Comedy; 1990s. Lacks what you want: Crime, War.)"
        "\n(Jackie Brown (1997): Crime, Drama; 1990s. Fits what you want.)")
    assert cards.note(["i2"], {"genres": ["Horror"], "decade": ["1970s"]}).endswith(
        "Lacks what you want: Horror, 1970s.)")
    # Without fit, or without a wish to compare with, a card is the plain card; the recommender's lists never
    # carry the simulator's wish.
    assert ItemCards(Catalog([brown])).note(["i1"], wanted) == "\n\n(Jackie Brown (1997): Crime, Drama; 1990s)"
    assert cards.note(["i1"]) == "\n\n(Jackie Brown (1997): Crime, Drama; 1990s)"
    assert cards.labels(["i1"]) == ["Jackie Brown (1997): Crime, Drama; 1990s"]


def test_a_long_card_is_cut_and_counted() -> None:
    long = Item("i2", "A Film", 2001, {"genres": [f"Genre{i}" for i in range(20)]})
    cards = ItemCards(Catalog([long, Item("i3", "Short", 2001, {"genres": ["Drama"]})]), max_chars=40)
    assert len(cards.card("i2")) <= 40 and cards.card("i2") == "A Film (2001): Genre0, Genre1, Genre2…"
    assert cards.card("i3") == "Short (2001): Drama" and cards.num_cut() == 1


@pytest.mark.parametrize("role,fit", [("user", False), ("user", True), ("recommender", False),
                                      ("recommender", True)])
def test_cards_render_in_training_as_the_generator_serves_them(tokenizer, catalog_file: Path, role: str,
                                                               fit: bool) -> None:
    """With item cards (saying whether each item fits, with fit) and retrieved candidates, each trained turn
    starts exactly where the generator's prompt for that turn ends, and the tokens before it are that prompt."""
    catalog = Catalog.load(catalog_file)
    config = load_config(None, {"engine.model": "HuggingFaceTB/SmolLM2-135M-Instruct", "user.item_cards": True,
                                "user.card_fit": fit, "recommender.num_candidates": 2})
    render = prompt_messages(config, catalog)
    prompts = PromptSettings(item_cards=True, card_fit=fit, num_candidates=2, catalog=str(catalog_file))
    cards = item_cards(prompts)
    ex = build_example(tokenizer, role, DIALOGUE, prompts, max_seq_len=4096, eos_ids=end_of_turn_ids(tokenizer),
                       candidates=candidate_view(prompts, cards) if role == "recommender" else None, cards=cards)
    starts = [a for a, _ in loss_spans(ex)]
    conv = Conversation("d1", 0, Seed("d1", DIALOGUE.preference_summary, ATTRS, "m3"))
    k = 0
    for speaker, text in TURNS:
        messages = render(conv, speaker)  # as the generator does before each turn (choosing the candidates)
        if speaker == role and k < len(starts):
            served = list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                        return_dict=False))
            assert ex.input_ids[:starts[k]] == served
            k += 1
        shown = conv.pending_candidates or [] if speaker == "recommender" else []
        conv.turns.append(Turn(speaker, text, text, 0, 0, 0, "stop", catalog.ground(text), None, shown))
        conv.pending_candidates = None
    assert k == len(starts) > 0
    text = tokenizer.decode(ex.input_ids)
    if role == "user" and fit:  # ATTRS want a 1990s crime movie
        assert "(Heat (1995): Crime, Thriller. Lacks what you want: 1990s.)" in text
        assert ("(Fargo (1996): Crime, Comedy. Lacks what you want: 1990s.)\n"
                "(Groundhog Day (1993): Comedy. Lacks what you want: Crime, 1990s.)") in text
    elif role == "user":
        assert "(Heat (1995): Crime, Thriller)" in text
        assert "(Fargo (1996): Crime, Comedy)\n(Groundhog Day (1993): Comedy)" in text
    else:
        assert "what you want" not in text
        assert "[catalog: Heat (1995): Crime, Thriller | Fargo (1996): Crime, Comedy]" in text


def test_reference_free_prompts_with_cards_hold_nothing_of_the_target(tmp_path: Path, make_config) -> None:
    from test_protocol import run

    seeds = make_seeds(20)
    without = write_seeds(tmp_path / "no-target.parquet", [replace(s, target_item_id=None) for s in seeds])
    on = {"user": {"item_cards": True, "card_fit": True}, "recommender": {"num_candidates": 3}}
    suggest = {"recommender": lambda rid, seed: "Try Heat (1995) or Toy Story (1995)."}
    with_target = run(make_config(**on), tmp_path / "a", **suggest)[1]
    without_target = run(make_config(**on, seeds_path=without), tmp_path / "b", **suggest)[1]
    assert with_target == without_target and len(with_target) > 40
    user_prompts = [m for rid, m in with_target.items() if int(rid.rsplit("@", 1)[1]) % 2 == 0 and len(m) > 3]
    assert user_prompts and all("(Heat (1995): Crime, Thriller." in m[3]["content"] for m in user_prompts)
    assert any("Fits what you want" in m[3]["content"] or "Lacks what you want" in m[3]["content"]
               for m in user_prompts)


def test_cards_need_a_catalog_with_attributes(tmp_path: Path, make_config) -> None:
    bare = tmp_path / "bare.jsonl"
    bare.write_text("".join(json.dumps({"item_id": f"i{i}", "title": f"Title {i}", "year": 1990}) + "\n"
                            for i in range(5)))
    seeds = write_seeds(tmp_path / "s.parquet", [Seed("s", "likes films", {"genres": ["Drama"]}, None)])
    config = make_config(user={"item_cards": True}, seeds_path=seeds)
    config = config.model_copy(update={"seeds": config.seeds.model_copy(update={"catalog": str(bare)})})
    with pytest.raises(ConfigError, match=rf"user.item_cards: the catalog {bare} has no attributes"):
        Generation(config, tmp_path / "out")
    with pytest.raises(TrainingInputError, match="prompts.item_cards: the catalog .* has no attributes"):
        item_cards(PromptSettings(item_cards=True, catalog=str(bare)))
    with pytest.raises(Exception, match="prompts.catalog: required with prompts.item_cards"):
        PromptSettings(item_cards=True)
    with pytest.raises(ConfigError, match="user.card_fit: .* needs user.item_cards: true"):
        load_config(None, {"engine.model": "HuggingFaceTB/SmolLM2-135M-Instruct", "user.card_fit": True})
    with pytest.raises(Exception, match="prompts.card_fit: needs prompts.item_cards"):
        PromptSettings(card_fit=True, catalog=str(bare))


def test_cut_cards_are_counted_in_the_manifest(tmp_path: Path, make_config) -> None:
    generation = Generation(make_config(user={"item_cards": True, "max_card_chars": 20}), tmp_path / "out")
    cut = sum(len(f"{i.display}: {', '.join(i.attributes['genres'])}") > 20 for i in make_catalog())
    assert generation.num_cards_cut == cut > 0
    assert generation.writer.manifest["catalog"]["cards_cut"] == cut


def test_cards_follow_the_generation_config(tmp_path: Path) -> None:
    config = tmp_path / "gen.yaml"
    config.write_text("user: {item_cards: true, max_card_chars: 99, card_fit: true}\n"
                      "seeds: {source: file, path: s.parquet, catalog: c.jsonl}\n")
    assert prompts_from_generation_config(config) == {"item_cards": True, "max_card_chars": 99, "card_fit": True,
                                                      "catalog": "c.jsonl"}


def test_the_teacher_says_what_it_wants_in_words() -> None:
    assert wanted_phrase({"genres": ["Action"], "decade": ["1990s"]}, "k") == "an action movie from the 1990s"
    assert wanted_phrase({"decade": ["1970s"]}, "k", item="film") == "something from the 1970s"
    assert {wanted_phrase({"genres": ["Crime", "Drama"]}, "k", turn=t) for t in (0, 1)} == {
        "a crime movie", "a drama movie"}  # successive turns take successive values
