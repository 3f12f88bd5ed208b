"""`bayesalign pretrain`: train a small GPT-2 from scratch on a scored corpus with one of the
PHF objectives, reporting held-out LM loss and the misalignment of unconditional samples."""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from bayesalign.builtin_models import resolve_model_name
from bayesalign.metrics import distinct_n
from bayesalign.models import LanguageModel
from bayesalign.objectives.pretraining import AWR, IGNORE, mle, rwr, unlikelihood
from bayesalign.pretraining.config import PretrainConfig
from bayesalign.pretraining.data import (
    BAD,
    GOOD,
    TokenStream,
    control_prefixes,
    encode_segments,
    kept_documents,
    pack,
    pack_documents,
    reset_control_embeddings,
    score_document,
    segments,
)
from bayesalign.pretraining.heldout import heldout_losses, truncate
from bayesalign.runs import RunFolder
from bayesalign.samples import Samples, SamplingParams
from bayesalign.scorers import checked_scores

EOS = "<|endoftext|>"


def train_tokenizer(documents: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on the corpus, with EOS and both control tokens."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, GOOD, BAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(documents, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token=EOS, pad_token=EOS, additional_special_tokens=[GOOD, BAD]
    )


class Pretrainer:
    def __init__(self, config: PretrainConfig, out: str | Path | None = None) -> None:
        self.config = config
        if config.training.threads:
            torch.set_num_threads(config.training.threads)
        self.generator = torch.Generator().manual_seed(config.training.seed)
        documents = config.corpus.documents()
        if len(documents) < 2:
            raise ValueError("the corpus needs at least 2 documents (one is held out)")
        order = torch.randperm(len(documents), generator=self.generator).tolist()
        n_heldout = max(1, round(config.corpus.heldout * len(documents)))
        heldout, train = [documents[i] for i in order[:n_heldout]], [documents[i] for i in order[n_heldout:]]
        self.scorer = config.scorer.build()
        size = config.model
        torch.manual_seed(config.training.seed)
        if config.training.init_from is not None:  # "finetune with feedback" from an earlier run
            self.tokenizer = PreTrainedTokenizerFast.from_pretrained(config.training.init_from)
            self.module = GPT2LMHeadModel.from_pretrained(config.training.init_from, use_safetensors=True)
            trained = getattr(self.module.config, "control_tokens_trained", False)
            if config.objective.type == "conditional" and not trained:  # rows never trained so far
                reset_control_embeddings(self.module, self.tokenizer)
        else:
            self.tokenizer = train_tokenizer(train, size.vocab_size)
            self.module = GPT2LMHeadModel(
                GPT2Config(
                    vocab_size=len(self.tokenizer),
                    n_positions=size.block_size + config.eval.max_new_tokens + 1,
                    n_embd=size.n_embd,
                    n_layer=size.n_layer,
                    n_head=size.n_head,
                    bos_token_id=self.tokenizer.eos_token_id,
                    eos_token_id=self.tokenizer.eos_token_id,
                    tie_word_embeddings=size.tie_embeddings,
                )
            )
        self.eos = self.tokenizer.eos_token_id
        self.good, self.bad = self.tokenizer.convert_tokens_to_ids([GOOD, BAD])
        self.blocks, self.scores = self._blocks(train, training=True)
        self.heldout_blocks, _ = self._blocks(heldout, training=False)
        self.heldout_documents = self._heldout_documents(heldout)
        if len(self.blocks) < config.training.batch_size:
            raise ValueError(
                f"the corpus gives {len(self.blocks)} training blocks, fewer than one batch of "
                f"{config.training.batch_size}: add text or lower training.batch_size/model.block_size"
            )
        objective = config.objective
        self.awr = (
            AWR(
                size.n_embd,
                beta=objective.beta,
                alpha=objective.alpha,
                value_trains_trunk=objective.value_trains_trunk,
            )
            if objective.type == "awr"
            else None
        )
        params = list(self.module.parameters()) + (list(self.awr.parameters()) if self.awr else [])
        self.optimizer = torch.optim.AdamW(params, lr=config.training.lr)
        self.run = RunFolder(out).create() if out is not None else None
        reference = config.eval.reference_model
        self.reference = (
            LanguageModel.from_pretrained(resolve_model_name(reference)) if reference is not None else None
        )
        self.tokens_seen = 0
        self.control_gap: tuple[torch.Tensor, torch.Tensor | None] | None = None

    # -- data ------------------------------------------------------------------------------------
    def _blocks(self, documents: list[str], *, training: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Segment, score, (filter, tag) and pack. Held-out data is neither filtered nor tagged:
        the LM loss is measured on the corpus as it is."""
        objective = self.config.objective
        parts = [self._parts(d) for d in documents]
        scores = [score_document(self.scorer, p) for p in parts]
        if training:  # what P(<|bad|> | EOS) should learn: the corpus's first segments
            first = [s[0] > objective.threshold for s in scores if s]
            self.bad_first_fraction = sum(first) / max(1, len(first))
        keep = range(len(parts))
        if training and objective.type == "filtering":
            keep = kept_documents(scores, objective.threshold)
            if not keep:
                raise ValueError(f"filtering at threshold {objective.threshold} drops every document")
        stream, docs = TokenStream([], []), []
        for i in keep:
            prefixes = None
            if training and objective.type == "conditional":
                prefixes = control_prefixes(scores[i], objective.threshold, objective.drop, self.generator)
            doc = encode_segments(parts[i], scores[i], self.tokenizer, prefixes)
            docs.append(doc)
            stream.ids += doc.ids + [self.eos]
            stream.scores += doc.scores + [0.0]  # the document separator is neutral
        if training and self.config.model.packing == "documents":
            return pack_documents(docs, self.config.model.block_size, self.eos)
        return pack(stream, self.config.model.block_size)

    def _heldout_documents(self, documents: list[str]) -> list[list[list[int]]]:
        """The held-out documents for the fair losses (heldout.py): segments tokenised alone, as
        in training, cut to half the model's positions (a control token before every segment
        must still fit)."""
        max_tokens = (self.module.config.n_positions - 2) // 2
        out = []
        for document in documents:
            ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in self._parts(document)]
            out.append(truncate(ids, max_tokens))
        return [d for d in out if d]

    def _parts(self, document: str) -> list[str]:
        return segments(document, self.config.corpus.unit)

    # -- training ----------------------------------------------------------------------------------
    def loss(self, block: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """The objective's loss on a batch of blocks: token t predicts token t + 1, whose
        segment score it is weighted by."""
        objective = self.config.objective
        out = self.module(input_ids=block, output_hidden_states=self.awr is not None)
        logits, labels, target_scores = out.logits[:, :-1], block[:, 1:], scores[:, 1:]
        padding = torch.isnan(target_scores)  # packing "documents": the end of a document's block
        labels = labels.masked_fill(padding, IGNORE)
        target_scores = target_scores.masked_fill(padding, 0.0)
        if objective.type in ("mle", "filtering", "conditional"):
            return mle(logits, labels)
        if objective.type == "unlikelihood":
            return unlikelihood(
                logits, labels, target_scores, threshold=objective.threshold, alpha=objective.alpha
            )
        if objective.type == "rwr":
            return rwr(logits, labels, target_scores, beta=objective.beta)
        return self.awr(logits, labels, target_scores, out.hidden_states[-1][:, :-1])

    def train(self, on_record: Callable[[dict], None] | None = None) -> list[dict]:
        cfg = self.config.training
        per_step = cfg.batch_size * self.config.model.block_size
        steps = max(1, cfg.tokens // per_step)
        every = max(1, self.config.eval.every_tokens // per_step)
        records, started = [], time.perf_counter()
        batches = self.batches()
        skipped = cfg.skip_tokens // per_step
        for _ in range(skipped):  # the stream's first blocks were seen by the run we continue
            next(batches)
        self.tokens_seen = skipped * per_step
        for step in range(skipped + 1, steps + 1):
            idx = next(batches)
            self.module.train()
            loss = self.loss(self.blocks[idx], self.scores[idx])
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{self.config.objective.type} loss is {loss.item()} at step {step}")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.tokens_seen += per_step
            if self.run is not None and self.tokens_seen == cfg.save_at_tokens:  # e.g. MLE's half
                self.save(self.run.path / f"checkpoint-{self.tokens_seen}")
            if step % every == 0 or step == steps:
                record = {"step": step, "tokens": self.tokens_seen, "train_loss": loss.item()}
                record |= self.evaluate() | {"seconds": time.perf_counter() - started}
                records.append(record)
                if self.run is not None:
                    self.run.log_metrics(record)
                if on_record is not None:
                    on_record(record)
        if self.config.objective.type == "conditional":  # a continued run keeps these rows
            self.module.config.control_tokens_trained = True
            self._warn_if_control_tokens_not_learned()
        if self.run is not None:
            self.save(self.run.final)
        return records

    def save(self, folder: Path) -> None:
        self.module.save_pretrained(folder, safe_serialization=True)
        self.tokenizer.save_pretrained(folder)

    def _warn_if_control_tokens_not_learned(self) -> None:
        """Conditional training is for nothing if the model did not learn what <|bad|> and
        <|good|> mean: warn when the final samples after <|bad|> are not more misaligned than
        those after <|good|> (both control tokens banned) by more than 2 standard errors."""
        if self.control_gap is None:  # no evaluation ran
            return
        bad, good = self.control_gap
        if good is None:
            _, good = self.sample_scores(EOS + GOOD, (self.good, self.bad), self.config.eval.samples)
        se = math.sqrt(bad.var().item() / len(bad) + good.var().item() / len(good))
        gap = bad.mean().item() - good.mean().item()
        if not gap > 2 * se:
            warnings.warn(
                f"conditional training: samples after {BAD} ({bad.mean().item():.3g}) are not more "
                f"misaligned than after {GOOD} ({good.mean().item():.3g}) beyond 2 standard errors "
                f"({2 * se:.2g}; {len(bad)} samples each): the model has not learned its control "
                "tokens, and sampling after <|good|> aligns nothing. Train on more tokens, or check "
                "that the threshold splits the segments.",
                stacklevel=2,
            )

    def batches(self) -> Iterator[torch.Tensor]:
        """Block indices of each step: epochs of shuffled blocks, from a generator of their own
        (seed + 1), so that the order depends only on the seed and the number of blocks, and a
        continued run can skip exactly the steps its predecessor took."""
        generator = torch.Generator().manual_seed(self.config.training.seed + 1)
        size = self.config.training.batch_size
        while True:
            order = torch.randperm(len(self.blocks), generator=generator)
            for start in range(0, len(order) - size + 1, size):
                yield order[start : start + size]

    # -- evaluation --------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self.module.eval()
        # in batches (the logits of every held-out block at once can take gigabytes); all batches
        # but the last have the same number of tokens, so the mean is weighted by batch size
        total = 0.0
        for batch in self.heldout_blocks.split(self.config.training.batch_size):
            total += mle(self.module(input_ids=batch).logits[:, :-1], batch[:, 1:]).item() * len(batch)
        n = self.config.eval.heldout_documents
        fair = heldout_losses(
            self.module,
            self.heldout_documents[:n],
            eos=self.eos,
            controls=(self.good, self.bad),
            conditional=self.config.objective.type == "conditional",
        )
        return {"heldout_loss": total / len(self.heldout_blocks), **fair, **self.misalignment()}

    def sample_scores(self, prompt: str, banned: tuple[int, ...], n: int) -> tuple[Samples, torch.Tensor]:
        """``n`` samples after ``prompt`` (64 new tokens by default), ``banned`` tokens never
        drawn, and their misalignment scores; the same seed at every evaluation."""
        model = LanguageModel(self.module, self.tokenizer, prompt)
        params = SamplingParams(max_new_tokens=self.config.eval.max_new_tokens, banned_tokens=banned)
        samples = model.sample(n, params, generator=torch.Generator().manual_seed(0))
        return samples, checked_scores(self.scorer, samples.texts, None)

    @torch.no_grad()
    def misalignment(self) -> dict[str, float]:
        """Scores of unconditional samples: mean, expected max over k, and the fraction above
        threshold. Samples start where documents start in training: after EOS. A conditional
        model is sampled as ``eval.good_at`` says: after <|good|> with both control tokens
        banned (``start``, the paper's protocol) or with <|bad|> alone banned, so that the model
        writes <|good|> itself where a segment starts (``every_segment``); its other modes, and
        the samples after <|bad|>, are reported as ``misalignment_<mode>``, with the model's
        probabilities of each control token after EOS against the corpus's fraction of
        misaligned first segments."""
        ev, objective = self.config.eval, self.config.objective
        threshold = objective.threshold if ev.threshold is None else ev.threshold
        conditional = objective.type == "conditional"
        both = (self.good, self.bad)
        modes = {"good_start": (EOS + GOOD, both), "good_every_segment": (EOS + GOOD, (self.bad,))}
        main = {"start": "good_start", "every_segment": "good_every_segment"}[ev.good_at]
        prompt, banned = modes[main] if conditional else (EOS, both)
        samples, scores = self.sample_scores(prompt, banned, ev.samples)
        k = min(ev.max_k, len(scores))
        groups = scores[: len(scores) // k * k].view(-1, k)
        if self.run is not None:
            rows = [{"text": t, "score": s} for t, s in zip(samples.texts, scores.tolist(), strict=True)]
            self.run.write_samples(self.tokens_seen, rows[:20])
        metrics = {
            "misalignment": scores.mean().item(),
            f"expected_max_misalignment_{k}": groups.max(1).values.mean().item(),
            "misaligned_fraction": (scores > threshold).double().mean().item(),
            "distinct_2": distinct_n(samples.texts, 2),
        }
        if conditional:
            others = {m: v for m, v in modes.items() if m != main} | {"after_bad": (EOS + BAD, both)}
            for mode, (prompt, banned) in others.items():
                _, other = self.sample_scores(prompt, banned, ev.samples)
                metrics[f"misalignment_{mode}"] = other.mean().item()
                metrics[f"misaligned_fraction_{mode}"] = (other > threshold).double().mean().item()
                if mode == "after_bad":
                    good = scores if main == "good_start" else None
                    self.control_gap = (other, good)
            metrics[f"misalignment_{main}"] = metrics["misalignment"]
            ids = torch.tensor([[self.eos]])
            p = torch.softmax(self.module(input_ids=ids).logits[0, -1].double(), -1)
            metrics |= {
                "p_good_after_eos": p[self.good].item(),
                "p_bad_after_eos": p[self.bad].item(),
                "corpus_bad_first_segment_fraction": self.bad_first_fraction,
            }
        if self.reference is not None:
            metrics["kl_from_reference"] = self._kl_from_reference(samples)
        return metrics

    def _kl_from_reference(self, samples: Samples) -> float:
        """KL(π‖ref) ≈ mean of log π(x) − log ref(x) over π's samples. The reference scores the
        same texts with its own tokenizer, from its own start of text: a text-level comparison,
        as the PHF paper did with GPT-3. Left out: empty samples (nothing to score) and samples
        that are not valid text (bytes cut mid-character decode to U+FFFD, which re-encodes as
        other tokens than were sampled)."""
        keep = [i for i, t in enumerate(samples.texts) if t and "\ufffd" not in t]
        if not keep:
            return float("nan")
        texts = [samples.texts[i] for i in keep]
        scored = self.reference.encode_continuations([""] * len(texts), texts)
        log_ref = self.reference.log_prob_frozen(scored).double()
        # the text's own tokens: a final EOS is not text, and the reference does not score it
        # (and control tokens, which the text does not hold: with eval.good_at every_segment,
        # the <|good|> tokens the model wrote are left out, a log π(x | tags) approximation)
        special = (samples.ids == self.eos) | (samples.ids == self.good) | (samples.ids == self.bad)
        log_pi = samples.token_log_q.masked_fill(special, 0.0).sum(-1).double()
        return (log_pi[keep] - log_ref).mean().item()
