"""Task metrics beside the target's, as small objects an `Evaluator` runs on π's evaluation
samples: ``Evaluator(target, metrics=[Perplexity(gpt2), Misalignment(pii, k=8)])``. Each returns
named numbers for the record; none of them changes training."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from bayesalign.metrics import bleu as corpus_bleu
from bayesalign.metrics import misalignment
from bayesalign.models import LanguageModel
from bayesalign.perplexity import perplexity
from bayesalign.proposals import Scored
from bayesalign.samples import Samples
from bayesalign.scorers import Scorer, checked_scores


class Metric(Protocol):
    """A metric of π from its evaluation draw (``micro``: sequences per forward pass)."""

    def __call__(self, policy: LanguageModel, draw: Scored, micro: int) -> dict[str, float]: ...


class Perplexity:
    """``perplexity_pi``: perplexity of π's samples under a reference model (fluency)."""

    def __init__(self, model: LanguageModel) -> None:
        self.model = model

    def __call__(self, policy: LanguageModel, draw: Scored, micro: int) -> dict[str, float]:
        return {"perplexity_pi": perplexity(self.model, draw.samples.texts, batch_size=micro)}


class Misalignment:
    """Misalignment of π's samples under a scorer of its own (higher = worse), e.g. a PII or
    offensiveness scorer the target does not use: ``misalignment_mean_pi`` and the expected
    maximum over ``k`` samples, and the share above ``threshold`` (metrics.misalignment)."""

    def __init__(self, scorer: Scorer, k: int = 8, threshold: float = 0.5) -> None:
        self.scorer, self.k, self.threshold = scorer, k, threshold

    def __call__(self, policy: LanguageModel, draw: Scored, micro: int) -> dict[str, float]:
        scores = checked_scores(self.scorer, draw.samples.texts, draw.samples.contexts)
        found = misalignment(scores.tolist(), k=self.k, threshold=self.threshold)
        return {f"{name}_pi": value for name, value in found.items()}


class References:
    """How likely π finds the real outputs of the evaluation contexts: per-token NLL of the
    references under π (``reference_nll_pi``) and under the prior (``reference_nll_a``, computed
    once), and with ``bleu`` the BLEU of π's samples against them (needs sacrebleu)."""

    def __init__(
        self,
        prior: LanguageModel,
        contexts: Sequence[str],
        references: Sequence[str],
        *,
        bleu: bool = False,
        micro: int = 64,
    ) -> None:
        self.samples: Samples = prior.encode_continuations(contexts, references)
        self.reference_of = dict(zip(self.samples.contexts, self.samples.texts, strict=True))
        self.bleu = bleu
        if bleu:
            corpus_bleu(["check"], ["check"])  # a missing sacrebleu fails here, before any work
        self.nll_a = self.nll(prior, micro)

    def nll(self, model: LanguageModel, micro: int) -> float:
        log_p = model.log_prob_frozen(self.samples, batch_size=micro)
        return (-log_p.sum() / self.samples.lengths.sum()).item()

    def __call__(self, policy: LanguageModel, draw: Scored, micro: int) -> dict[str, float]:
        metrics = {"reference_nll_pi": self.nll(policy, micro), "reference_nll_a": self.nll_a}
        if self.bleu:
            wanted = [self.reference_of[c] for c in draw.samples.contexts]
            metrics["bleu_pi"] = corpus_bleu(draw.samples.texts, wanted)
        return metrics
