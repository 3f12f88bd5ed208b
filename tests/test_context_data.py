"""Contexts from data: a ``datasets`` dataset (local files of every format it reads, save_to_disk
folders, hub ids only when allowed), and the errors that a bad source gives before any run
folder exists. Everything is local: the hub is monkeypatched, never reached."""

from __future__ import annotations

import copy
import json
import pickle
import sys
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from bayesalign.cli import main
from bayesalign.config import ConfigError, parse_config
from bayesalign.config.build import build_models, build_target, build_trainer, load_context_sets
from bayesalign.contexts import Context, ContextError, load_contexts
from bayesalign.exact import ExactTarget, SequenceSpace
from bayesalign.scorers import CallableScorer, ScorerError
from bayesalign.targets import Target

ROWS = {"prompt": ["a", "b b", "c c c"], "answer": ["a", "b", "c"], "level": [1, 2, 3]}


def write(folder: Path, fmt: str, rows: dict = ROWS) -> Path:
    """``rows`` written as a file (or folder) of format ``fmt``, as a user would have them."""
    table = pa.table(rows)
    path = folder / f"rows.{fmt}"
    if fmt == "parquet":
        pq.write_table(table, path)
    elif fmt == "csv":
        datasets.Dataset(table).to_csv(str(path))
    elif fmt == "json":
        path.write_text(json.dumps(table.to_pylist()))  # one JSON array, as datasets' json reads
    elif fmt == "arrow":
        with pa.OSFile(str(path), "wb") as f, pa.ipc.new_stream(f, table.schema) as writer:
            writer.write_table(table)
    elif fmt == "saved":
        datasets.Dataset(table).save_to_disk(str(path))
    elif fmt == "saved-dict":
        datasets.DatasetDict({"test": datasets.Dataset(table)}).save_to_disk(str(path))
    return path


@pytest.mark.parametrize("fmt", ["parquet", "csv", "json", "arrow", "saved", "saved-dict"])
def test_contexts_come_from_any_file_datasets_reads_with_their_rows(tmp_path, fmt):
    split = "test" if fmt == "saved-dict" else "train"
    contexts = load_contexts(write(tmp_path, fmt), "prompt", split=split)
    assert contexts == ROWS["prompt"]
    assert [c.columns for c in contexts] == [
        {"answer": a, "level": n} for a, n in zip(ROWS["answer"], ROWS["level"], strict=True)
    ]
    restored = pickle.loads(pickle.dumps(contexts[1]))  # scorer worker processes get the row too
    assert isinstance(restored, Context) and restored == "b b" and restored.columns["level"] == 2


def test_text_jsonl_and_list_contexts_are_read_as_before(tmp_path):
    (tmp_path / "c.txt").write_text("one\n\ntwo\n")
    assert load_contexts(tmp_path / "c.txt") == ["one", "two"]
    (tmp_path / "c.jsonl").write_text('{"src": "one", "gold": 1}\n')
    [context] = load_contexts(tmp_path / "c.jsonl", "src")
    assert context == "one" and context.columns == {"gold": 1}  # the other keys ride along
    assert load_contexts(["x"]) == ["x"]


def test_a_hub_id_is_read_only_when_allowed(monkeypatch):
    with pytest.raises(ContextError, match=r"'org/prompts' is no local file or folder.*contexts\.hub: true"):
        load_contexts("org/prompts", "prompt")
    asked = []

    def load_dataset(name, split):
        asked.append((name, split))
        return datasets.Dataset.from_dict(ROWS)

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    assert load_contexts("org/prompts", "prompt", split="validation", hub=True) == ROWS["prompt"]
    assert asked == [("org/prompts", "validation")]


def test_bad_dataset_sources_are_one_line_naming_key_and_file(tmp_path):
    """Each mistake says which key (contexts.train or .eval) and which file, and what is there."""
    parquet = write(tmp_path, "parquet")
    empty = tmp_path / "empty.csv"
    empty.write_text("prompt,answer\n")
    broken = tmp_path / "broken.csv"
    broken.write_text('prompt,answer\n"a,b\n')
    cases = {
        "contexts.train: contexts file {tmp}/missing.parquet does not exist": {
            "train": "{tmp}/missing.parquet"
        },
        "contexts.train: {tmp}/rows.parquet has no column 'question' (set contexts.field); its columns: "
        "prompt, answer, level": {"train": str(parquet), "field": "question"},
        "contexts.eval: {tmp}/empty.csv holds no context (its split 'train' is empty)": {
            "train": str(parquet),
            "eval": str(empty),
        },
        "contexts.train: {tmp}/broken.csv: datasets cannot read it: ": {"train": str(broken)},
        "contexts.train: {tmp}/rows.saved-dict has no split 'train' (set contexts.split); its splits: test": {
            "train": str(write(tmp_path, "saved-dict"))
        },
    }
    for message, section in cases.items():
        raw = {
            "model": {"name": "toy"},
            "target": {"constraints": [{"type": "word", "words": ["b"]}]},
            "contexts": {
                "field": "prompt",
                "per_step": 1,
                **{k: v.format(tmp=tmp_path) for k, v in section.items()},
            },
        }
        with pytest.raises(ContextError) as err:
            load_context_sets(parse_config(raw))
        assert str(err.value).startswith(message.format(tmp=tmp_path))
        assert "\n" not in str(err.value)


def test_a_bad_contexts_dataset_fails_before_the_run_folder_exists(tmp_path, capsys):
    config = yaml.safe_load((Path(__file__).parents[1] / "configs" / "toy_word.yaml").read_text())
    config = copy.deepcopy(config) | {
        "contexts": {"train": str(write(tmp_path, "parquet")), "field": "question"}
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    assert main(["train", str(path), "--out", str(out)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("error: contexts.train: ") and "has no column 'question'" in err
    assert "Traceback" not in err
    assert not out.exists()


# -- other columns to the scorers that ask for them ----------------------------------------------------
ROW_SCORER = '''
SEEN = []

def has_answer(text, context, answer, level):
    """b(x, c): x contains the word of c's row's answer column."""
    SEEN.append((context, answer, level))
    return answer in text.split()
'''


def test_a_scorer_sees_the_columns_of_each_samples_own_row_through_training(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "rowscorer19.py").write_text(ROW_SCORER)
    raw = {
        "model": {"name": "toy", "toy": {"words": ["a", "b", "c"], "seed": 1}},
        "sampling": {"max_new_tokens": 4},
        "contexts": {"train": str(write(tmp_path, "parquet")), "field": "prompt", "per_step": 3},
        "target": {
            "constraints": [
                {
                    "type": "callable",
                    "function": "rowscorer19:has_answer",
                    "boolean": True,
                    "takes_context": True,
                    "columns": ["answer", "level"],
                }
            ]
        },
        "training": {
            "method": "cdpg",
            "steps": 2,
            "batch_size": 48,
            "lr": 1e-2,
            "proposal": {"update": "fixed"},
        },
        "eval": {"every": 2, "samples": 48, "exact": True},
    }
    config = parse_config(raw)
    policy, prior = build_models(config.model, config.prompt, config.training.seed)
    target = build_target(config.target, prior, config.sampling)
    records = build_trainer(config, policy, target).fit()
    seen = sys.modules["rowscorer19"].SEEN
    rows = {p: (a, n) for p, a, n in zip(*ROWS.values(), strict=True)}
    assert {c for c, _, _ in seen} == set(ROWS["prompt"])  # every context was scored...
    assert all(rows[c] == (a, n) for c, a, n in seen)  # ...each with its own row's values
    # the exact evaluation enumerated each context's target with its own row: at step 0 (π = a)
    # KL(p_c‖a) = −log Z_c, with Z_c computed here from the answers directly
    answer = dict(zip(ROWS["prompt"], ROWS["answer"], strict=True))
    direct = Target.pointwise(
        prior, [CallableScorer(lambda t, c: answer[c] in t.split(), boolean=True, takes_context=True)]
    )
    log_z = [ExactTarget.build(direct, SequenceSpace(prior, 4, context=c)).log_z for c in ROWS["prompt"]]
    assert records[0]["exact_kl_p_pi"] == pytest.approx(-sum(log_z) / 3, rel=1e-6)


def test_batched_scorers_get_a_list_per_column_and_a_missing_column_is_named():
    contexts = [Context("a", {"answer": "b"}), Context("c", {"answer": "c"})]
    scorer = CallableScorer(
        lambda texts, answer: [a in t for t, a in zip(texts, answer, strict=True)],
        boolean=True,
        batched=True,
        columns=("answer",),
    )
    assert scorer(["b b", "a"], contexts).tolist() == [1.0, 0.0]
    with pytest.raises(
        ScorerError, match=r"asks for column 'gold', which context 'a' lacks \(its other columns: answer\)"
    ):
        CallableScorer(lambda t, gold: 1.0, columns=("gold",))(["x"], contexts[:1])
    with pytest.raises(ScorerError, match="which come with contexts: these texts have none"):
        scorer(["x"])


def test_columns_are_checked_against_the_rows_before_the_run(tmp_path):
    wants = {"type": "callable", "function": "math:isfinite", "columns": ["gold"], "boolean": True}
    raw = {"model": {"name": "toy"}, "target": {"constraints": [wants]}}
    with pytest.raises(
        ConfigError,
        match=r"target.constraints\[0\]: scorer 'callable' asks for column 'gold', but there is no contexts",
    ):
        load_context_sets(parse_config(copy.deepcopy(raw)))
    raw["contexts"] = {"train": str(write(tmp_path, "parquet")), "field": "prompt", "per_step": 1}
    with pytest.raises(
        ConfigError, match=r"which context 'a' of contexts.train lacks \(its other columns: answer, level\)"
    ):
        load_context_sets(parse_config(raw))


def test_prior_draws_read_back_from_the_pool_cache_keep_their_rows(tmp_path):
    """The cache stores texts; a conditional pool read back gets each context's row again, so a
    scorer with columns scores cached draws as it scores fresh ones."""
    from bayesalign.prior_draws import PoolCache, draw_prior
    from bayesalign.samples import SamplingParams
    from bayesalign.toy import toy_model

    contexts = load_contexts(write(tmp_path, "parquet"), "prompt")
    prior, params, cache = (
        toy_model(["a", "b", "c"], seed=1),
        SamplingParams(max_new_tokens=3),
        PoolCache(tmp_path),
    )
    fresh, _ = draw_prior(prior, 4, params, contexts=contexts, cache=cache)
    cached, _ = draw_prior(prior, 4, params, contexts=contexts, cache=cache)
    assert cached.samples.texts == fresh.samples.texts
    assert [c.columns for c in cached.samples.contexts] == [c.columns for c in fresh.samples.contexts]


def test_the_documented_config_is_valid():
    """docs/conditional.md's example of datasets, chat prompts and columns parses as written."""
    page = (Path(__file__).parents[1] / "docs" / "conditional.md").read_text()
    section = page.split("## Your own data", 1)[1]
    config = parse_config(yaml.safe_load(section.split("```yaml\n", 1)[1].split("```", 1)[0]))
    assert config.model.prompt_format == "chat"
    assert (config.contexts.field, config.contexts.split) == ("question", "train")
    assert config.target.constraints[0].columns == ["answer"]
