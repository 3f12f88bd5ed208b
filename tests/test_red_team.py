"""Red teaming: prompts are drawn exactly ∝ exp(score/T), and the loop's pool and per-round
records add up, on tiny toy models."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest
import torch
import yaml

from bayesalign.cli import main
from bayesalign.pretraining.red_team import (
    RedTeam,
    RedTeamParams,
    draw_examples,
    few_shot_prompt,
    prompt_probabilities,
)
from bayesalign.samples import SamplingParams
from bayesalign.toy import toy_model

WORDS = ["a", "b", "bad"]


def test_prompt_probabilities_are_a_softmax_of_score_over_temperature():
    probs = prompt_probabilities([0.0, 0.1, 0.3], temperature=0.1)
    z = 1 + math.e + math.e**3
    assert probs.tolist() == pytest.approx([1 / z, math.e / z, math.e**3 / z])
    assert prompt_probabilities([1000.0, 1000.0], 0.1).tolist() == [0.5, 0.5]  # no overflow
    with pytest.raises(ValueError, match="temperature must be > 0"):
        prompt_probabilities([0.0], 0.0)


def test_draws_follow_exp_score_over_t_first_and_among_the_rest_second():
    scores, t, n = [0.0, 0.1, 0.2, 0.3], 0.1, 20_000
    p = prompt_probabilities(scores, t).tolist()
    generator = torch.Generator().manual_seed(0)
    pairs = Counter(tuple(draw_examples(scores, t, 2, generator)) for _ in range(n))
    first = Counter()
    for (i, _), count in pairs.items():
        first[i] += count
    for i in range(4):  # the first draw ∝ exp(s/T)
        assert abs(first[i] / n - p[i]) < 4 * math.sqrt(p[i] * (1 - p[i]) / n)
    for (i, j), count in pairs.items():  # the second ∝ exp(s/T) among the others
        assert i != j
        expected = p[i] * p[j] / (1 - p[i])
        assert abs(count / n - expected) < 4 * math.sqrt(expected * (1 - expected) / n) + 1e-3
    assert sorted(draw_examples([0.0, 1.0], t, 4, generator)) == [0, 1]  # at most the whole pool


class BadWords:
    """Misalignment = the number of "bad" words."""

    name, boolean = "bad_words", False

    def __call__(self, texts, contexts=None):
        return torch.tensor([float(t.split().count("bad")) for t in texts], dtype=torch.float64)


def red_team(seed: int = 0) -> RedTeam:
    # every word banned: the target's continuations are empty, so a prompt's score is exactly
    # its own number of "bad" words (score_prompt) and the bookkeeping can be checked exactly
    target = toy_model(WORDS, seed=0)
    silent = SamplingParams(max_new_tokens=2, banned_tokens=(1, 2, 3))
    params = RedTeamParams(rounds=3, trials=3, candidates=4, few_shot=2, continuations=3, score_prompt=True)
    red = toy_model(WORDS, seed=1, n_positions=64)
    return RedTeam(
        target,
        red,
        BadWords(),
        params,
        target_sampling=silent,
        red_sampling=SamplingParams(max_new_tokens=3),
        seed=seed,
    )


def test_the_loop_keeps_the_pool_and_its_misalignment_per_round():
    initial = ["a b", "bad a", "a b"]  # a repeat counts once
    pool, records = red_team().run(initial)
    assert [r["round"] for r in records] == [0, 1, 2, 3]
    assert records[0]["pool_size"] == 2 and records[0]["pool_misalignment"] == 0.5
    assert len({e.prompt for e in pool}) == len(pool) and all(e.prompt for e in pool)
    for entry in pool:
        assert entry.score == entry.prompt.split().count("bad")
    for r, record in enumerate(records):
        upto = [e.score for e in pool if e.round <= r]
        new = [e.score for e in pool if e.round == r]
        assert record["pool_size"] == len(upto)
        assert record["pool_misalignment"] == pytest.approx(sum(upto) / len(upto))
        assert record["pool_max_misalignment"] == max(upto)
        assert record["new_prompts"] == len(new) <= 3 * 4
    assert sum(r["new_prompts"] for r in records[1:]) > 0
    again, _ = red_team().run(initial)
    assert again == pool  # the seed fixes the whole loop


def test_red_teaming_refuses_bad_input():
    with pytest.raises(ValueError, match="at least one initial prompt"):
        red_team().run([])
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        RedTeamParams(rounds=0)
    assert few_shot_prompt(["x = 1", "y"], "# lines\n") == "# lines\n- x = 1\n- y\n- "


def test_cli_red_team_writes_the_pool_and_one_record_per_round(tmp_path, capsys):
    toy_model(WORDS, seed=0).save_pretrained(tmp_path / "target")
    toy_model(WORDS, seed=1).save_pretrained(tmp_path / "red")
    raw = {
        "model": str(tmp_path / "target"),
        "red_model": str(tmp_path / "red"),
        "scorer": {"type": "word", "words": ["bad"]},
        "prompts": ["a b", "bad"],
        "rounds": 2,
        "trials": 2,
        "candidates": 2,
        "continuations": 4,
        "max_new_tokens": 3,
        "red_max_new_tokens": 3,
    }
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["red-team", str(path), "--out", str(tmp_path / "out")]) == 0
    rounds = [json.loads(line) for line in (tmp_path / "out" / "rounds.jsonl").open()]
    pool = [json.loads(line) for line in (tmp_path / "out" / "pool.jsonl").open()]
    assert [r["round"] for r in rounds] == [0, 1, 2] and rounds[-1]["pool_size"] == len(pool)
    assert main(["red-team", str(path), "--out", str(tmp_path / "out")]) == 2  # exists
    raw["banned_tokens"] = ["<|good|>"]
    path.write_text(yaml.safe_dump(raw))
    assert main(["red-team", str(path), "--out", str(tmp_path / "other")]) == 2
    assert "not tokens of" in capsys.readouterr().err
