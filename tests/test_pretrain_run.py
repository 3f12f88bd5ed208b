"""`bayesalign pretrain` on a synthetic corpus: half of its lines are "bad" (misaligned), and
each document has its own rate of them. Conditional training must cut misalignment after
<|good|> far below MLE's; filtering must train on exactly the documents it keeps."""

from __future__ import annotations

import copy
import random
import warnings

import pytest
import torch
import yaml
from transformers import GPT2LMHeadModel

from bayesalign.cli import main
from bayesalign.pretraining.config import PretrainConfig
from bayesalign.pretraining.trainer import Pretrainer

SUBJECTS = ["the cat", "my dog", "this day", "the food", "our team", "that film", "the weather", "his code"]
GOOD_WORDS, BAD_WORDS = ["good", "nice", "fine", "great"], ["bad", "awful"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[str]:
    rng = random.Random(0)
    root = tmp_path_factory.mktemp("corpus")
    files = []
    for d in range(40):
        rate = rng.random()
        lines = [
            f"{rng.choice(SUBJECTS)} is {rng.choice(BAD_WORDS if rng.random() < rate else GOOD_WORDS)}.\n"
            for _ in range(30)
        ]
        path = root / f"doc{d}.txt"
        path.write_text("".join(lines))
        files.append(str(path))
    return files


def config(files: list[str], objective: dict, tokens: int = 250_000) -> dict:
    return {
        "corpus": {"files": files, "unit": "lines"},
        "scorer": {"type": "regex", "pattern": r"\b(bad|awful)\b", "name": "misaligned"},
        "model": {"n_layer": 2, "n_embd": 64, "n_head": 2, "block_size": 64, "vocab_size": 400},
        "objective": objective,
        "training": {"tokens": tokens, "batch_size": 16, "lr": 3e-3},
        "eval": {"every_tokens": 10**9, "samples": 128, "max_new_tokens": 6},
    }


def test_conditional_training_cuts_misalignment_after_good(corpus):
    mle = Pretrainer(PretrainConfig.model_validate(config(corpus, {"type": "mle"}))).train()[-1]
    raw = config(corpus, {"type": "conditional"})
    raw["model"]["packing"] = "documents"  # documents start after EOS at position 0, as samples do
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ct = Pretrainer(PretrainConfig.model_validate(raw)).train()[-1]
    assert not [w for w in caught if "control tokens" in str(w.message)]  # learned: no warning
    assert ct["misalignment_after_bad"] > 0.35 > ct["misalignment_good_start"]
    # a document starts with a control token (99 % of lines are tagged), and P(<|bad|> | EOS)
    # follows the corpus's fraction of misaligned first lines (0.64 here; 36 documents, so loosely).
    # With packing "stream" this fails: EOS at position 0 is rare in training (P(control) 0.43)
    assert ct["p_bad_after_eos"] + ct["p_good_after_eos"] > 0.9
    share = ct["p_bad_after_eos"] / (ct["p_bad_after_eos"] + ct["p_good_after_eos"])
    assert abs(share - ct["corpus_bad_first_segment_fraction"]) < 0.25
    assert mle["misalignment"] > 0.35  # about the corpus's rate of bad lines
    assert ct["misalignment"] < mle["misalignment"] / 5, (ct["misalignment"], mle["misalignment"])


def test_filtering_trains_on_the_kept_documents_only(corpus):
    kept = Pretrainer(PretrainConfig.model_validate(config(corpus, {"type": "filtering", "threshold": 0.3})))
    every = Pretrainer(PretrainConfig.model_validate(config(corpus, {"type": "mle"})))
    assert 0 < len(kept.blocks) < 0.7 * len(every.blocks)
    bad_rate = kept.scores.mean().item()
    assert bad_rate <= 0.3 < every.scores.mean().item()  # token scores: the kept data is cleaner
    with pytest.raises(ValueError, match="drops every document"):
        Pretrainer(PretrainConfig.model_validate(config(corpus, {"type": "filtering", "threshold": -1.0})))


@pytest.mark.parametrize(
    "objective", [{"type": "unlikelihood", "alpha": 1.0}, {"type": "rwr"}, {"type": "awr"}]
)
def test_every_feedback_objective_runs_the_same_loop_and_records_its_metrics(corpus, objective, tmp_path):
    trainer = Pretrainer(PretrainConfig.model_validate(config(corpus, objective, tokens=4096)), tmp_path)
    record = trainer.train()[-1]
    assert record["tokens"] == 4096
    assert set(record) >= {"train_loss", "heldout_loss", "misalignment", "misaligned_fraction"}
    assert (tmp_path / "final" / "model.safetensors").is_file()
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 1


def test_cli_pretrain_validates_before_work(corpus, tmp_path, capsys):
    raw = config(corpus, {"type": "conditional"}, tokens=2048)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["pretrain", str(path), "--out", str(tmp_path / "run")]) == 0
    assert main(["pretrain", str(path), "--out", str(tmp_path / "run")]) == 2  # the run exists
    bad = copy.deepcopy(raw)
    bad["objective"]["type"] = "conditonal"
    path.write_text(yaml.safe_dump(bad))
    assert main(["pretrain", str(path), "--out", str(tmp_path / "other")]) == 2
    assert "conditonal" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()


def test_finetuning_with_feedback_continues_the_stream_where_the_mle_run_stopped(
    corpus, tmp_path, monkeypatch
):
    """MLE for the first half of the budget, then conditional training on the rest: the second
    run starts from the first's weights and tokenizer and trains on exactly the blocks an
    uninterrupted run would have used after the skipped steps."""
    seen: dict[str, list] = {"full": [], "continued": []}
    original = Pretrainer.loss

    def recording(key):
        def loss(self, block, scores):
            seen[key].append(block.clone())
            return original(self, block, scores)

        return loss

    full = config(corpus, {"type": "mle"}, tokens=8192)
    monkeypatch.setattr(Pretrainer, "loss", recording("full"))
    Pretrainer(PretrainConfig.model_validate(full)).train()
    first = config(corpus, {"type": "mle"}, tokens=4096)
    monkeypatch.setattr(Pretrainer, "loss", lambda self, block, scores: original(self, block, scores))
    Pretrainer(PretrainConfig.model_validate(first), tmp_path / "mle").train()
    rest = config(corpus, {"type": "unlikelihood", "alpha": 1.0}, tokens=8192)
    rest["training"] |= {"init_from": str(tmp_path / "mle" / "final"), "skip_tokens": 4096}
    monkeypatch.setattr(Pretrainer, "loss", recording("continued"))
    records = Pretrainer(PretrainConfig.model_validate(rest)).train()
    assert records[-1]["tokens"] == 8192 and len(seen["continued"]) == 4  # 4 of 8 steps of 1024 tokens
    for mine, theirs in zip(seen["continued"], seen["full"][4:], strict=True):
        assert torch.equal(mine, theirs)
    rest["training"]["skip_tokens"] = 8192
    with pytest.raises(ValueError, match="leaves nothing of the budget"):
        PretrainConfig.model_validate(rest)


def test_kl_from_a_reference_model_is_zero_against_itself(corpus, tmp_path):
    """The reference is the MLE run's own final model: π = ref, so log π − log ref = 0 per text
    (up to the banned control tokens, which MLE never samples anyway)."""
    Pretrainer(
        PretrainConfig.model_validate(config(corpus, {"type": "mle"}, tokens=2048)), tmp_path / "a"
    ).train()
    again = config(corpus, {"type": "mle"}, tokens=2048)
    again["training"] |= {"init_from": str(tmp_path / "a" / "final"), "skip_tokens": 1024, "lr": 1e-12}
    again["eval"]["reference_model"] = str(tmp_path / "a" / "final")
    record = Pretrainer(PretrainConfig.model_validate(again)).train()[-1]
    assert abs(record["kl_from_reference"]) < 0.05
    assert 0 < record["distinct_2"] <= 1


def test_conditional_training_from_an_mle_checkpoint_starts_its_control_tokens_at_the_mean(corpus, tmp_path):
    """The MLE run never saw <|good|>/<|bad|>: continuing it with conditional training resets
    their rows to the mean embedding; continuing a conditional run keeps what it learned."""
    Pretrainer(
        PretrainConfig.model_validate(config(corpus, {"type": "mle"}, tokens=1024)), tmp_path / "m"
    ).train()
    rest = config(corpus, {"type": "conditional"}, tokens=2048)
    rest["training"] |= {"init_from": str(tmp_path / "m" / "final"), "skip_tokens": 1024}
    continued = Pretrainer(PretrainConfig.model_validate(rest), tmp_path / "c")
    weight = continued.module.get_input_embeddings().weight.detach()
    others = torch.ones(len(weight), dtype=torch.bool)
    others[[continued.good, continued.bad]] = False
    torch.testing.assert_close(weight[continued.good], weight[others].mean(0))
    continued.train()
    learned = continued.module.get_input_embeddings().weight.detach()[continued.good].clone()
    again = config(corpus, {"type": "conditional"}, tokens=3072)
    again["training"] |= {"init_from": str(tmp_path / "c" / "final"), "skip_tokens": 2048}
    kept = (
        Pretrainer(PretrainConfig.model_validate(again)).module.get_input_embeddings().weight[continued.good]
    )
    torch.testing.assert_close(kept.detach(), learned)


def test_a_model_that_has_not_learned_its_control_tokens_is_warned_about(corpus):
    """Two steps teach nothing: samples after <|bad|> and <|good|> are alike, and the run says so."""
    trainer = Pretrainer(PretrainConfig.model_validate(config(corpus, {"type": "conditional"}, tokens=2048)))
    with pytest.warns(UserWarning, match="has not learned its control tokens"):
        trainer.train()


def test_a_vocabulary_below_the_byte_alphabet_is_refused_before_any_work(corpus, tmp_path, capsys):
    raw = config(corpus, {"type": "mle"}, tokens=2048)
    raw["model"]["vocab_size"] = 258  # 256 bytes + 3 special tokens need 259
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["pretrain", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "model.vocab_size" in err and "259" in err
    assert not (tmp_path / "run").exists()
    raw["model"]["vocab_size"] = 259
    assert PretrainConfig.model_validate(raw).model.vocab_size == 259


def test_padding_of_document_packing_is_not_learned(corpus):
    """With packing "documents" the padded tail of a document's last block has NaN scores: the
    loss must equal the loss over the real labels alone, for a score-weighted objective too."""
    raw = config(corpus, {"type": "rwr", "beta": 1.0}, tokens=2048)
    raw["model"]["packing"] = "documents"
    trainer = Pretrainer(PretrainConfig.model_validate(raw))
    padded = torch.isnan(trainer.scores).any(1).nonzero()[:, 0]
    starts = (trainer.blocks[:, 0] == trainer.eos).sum().item()
    assert starts == 36 and 0 < len(padded) <= 36  # each training document starts one block
    padded = padded[:4]
    block, scores = trainer.blocks[padded], trainer.scores[padded]
    trainer.module.eval()
    loss = trainer.loss(block, scores)
    logits = trainer.module(input_ids=block).logits[:, :-1]
    real = ~torch.isnan(scores[:, 1:])
    log_p = torch.log_softmax(logits, -1).gather(-1, block[:, 1:, None]).squeeze(-1)
    by_hand = -(log_p * torch.exp(-scores[:, 1:].nan_to_num(0.0)))[real].mean()
    torch.testing.assert_close(loss, by_hand)


@pytest.mark.parametrize("tie", [True, False])
def test_untied_embeddings_give_the_output_layer_its_own_weights_through_save_and_load(corpus, tie, tmp_path):
    raw = config(corpus, {"type": "conditional"}, tokens=2048)
    raw["model"]["tie_embeddings"] = tie
    trainer = Pretrainer(PretrainConfig.model_validate(raw), tmp_path)
    trainer.train()
    module = trainer.module
    shared = module.lm_head.weight.data_ptr() == module.transformer.wte.weight.data_ptr()
    assert shared is tie
    if not tie:  # both were trained on their own: no longer equal
        assert not torch.equal(module.lm_head.weight, module.transformer.wte.weight)
    loaded = GPT2LMHeadModel.from_pretrained(tmp_path / "final", use_safetensors=True)
    assert (loaded.lm_head.weight.data_ptr() == loaded.transformer.wte.weight.data_ptr()) is tie
    assert torch.equal(loaded.lm_head.weight, module.lm_head.weight)


def test_documents_as_segments_tag_each_document_once_by_its_whole_text(tmp_path):
    """unit: documents: one control token per document, right after its EOS, <|bad|> when any of
    its lines is misaligned, although every document's first line is aligned (sentence- or
    line-level tags would mark every document's start <|good|>)."""
    files = []
    for d in range(40):
        lines = [f"{SUBJECTS[d % 2]} is good.\n"] + ["the food is nice.\n"] * 12
        if d % 2:  # odd documents: one misaligned line in the middle
            lines[6] = "the food is awful.\n"
        files.append(tmp_path / f"doc{d}.txt")
        files[-1].write_text("".join(lines))
    raw = config([str(f) for f in files], {"type": "conditional", "drop": 0.0}, tokens=2048)
    raw["corpus"]["unit"] = "documents"
    raw["model"]["packing"] = "documents"
    trainer = Pretrainer(PretrainConfig.model_validate(raw))
    blocks, good, bad = trainer.blocks, trainer.good, trainer.bad
    starts = blocks[:, 0] == trainer.eos
    assert starts.sum() == 36  # 40 documents, 4 held out
    tags = blocks[starts, 1].tolist()
    assert ((blocks == good) | (blocks == bad)).sum() == len(tags)  # no token anywhere else
    first_lines = [trainer.tokenizer.decode(b[2:6]) for b in blocks[starts]]
    expected = [bad if text.startswith(SUBJECTS[1]) else good for text in first_lines]
    assert tags == expected and good in tags and bad in tags
