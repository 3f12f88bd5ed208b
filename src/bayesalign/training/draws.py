"""How the training loop gets its samples: fresh draws from a model, sharded over processes and
spread over contexts, or replayed exact p-samples of the posterior pool."""

from __future__ import annotations

from typing import Literal

import torch

from bayesalign.contexts import evaluation_rows, step_contexts
from bayesalign.models import LanguageModel
from bayesalign.pools import PosteriorPool
from bayesalign.proposals import PriorPass, Scored, propose
from bayesalign.samples import SamplingParams
from bayesalign.sampling_backends import VLLMSampler
from bayesalign.targets import Target
from bayesalign.training.distributed import Distributed


class Draws:
    """Draws and scores samples for training and evaluation.

    With contexts (a conditional target): for training, ``per_step`` contexts drawn at random,
    n/per_step samples each; for evaluation, the fixed ``eval_contexts``, n // len(them) samples
    each. A draw is sharded over processes (training/distributed.py); every process gets all n
    samples. ``vllm``: π's samples come from that engine (``sampling.backend: vllm``).
    """

    def __init__(
        self,
        target: Target,
        sampling: SamplingParams,
        dist: Distributed,
        *,
        sample_batch: int | None = None,
        contexts: list[str] | None = None,
        per_step: int = 8,
        eval_contexts: list[str] | None = None,
        vllm: VLLMSampler | None = None,
    ) -> None:
        if (contexts is None) != (eval_contexts is None):
            raise ValueError("a conditional target needs both training contexts and evaluation contexts")
        self.target, self.sampling, self.dist, self.sample_batch = target, sampling, dist, sample_batch
        self.contexts, self.per_step, self.eval_contexts, self.vllm = contexts, per_step, eval_contexts, vllm

    def __call__(
        self,
        model: LanguageModel,
        n: int,
        generator: torch.Generator,
        *,
        evaluation: bool = False,
        prior: PriorPass = "all",
        differentiable: bool = False,
    ) -> Scored:
        """n samples from ``model`` scored under the target, with as much of the prior's pass as
        ``prior`` asks for (`PriorPass`); ``differentiable``: keeping the sampling pass's graph."""
        contexts = None
        if self.contexts is not None and evaluation:
            contexts = evaluation_rows(self.eval_contexts, n)
        elif self.contexts is not None:
            contexts = step_contexts(self.contexts, self.per_step, n, generator)
        sampler = self.vllm if self.vllm is not None and model is self.vllm.policy else model

        def draw_rows(rows: slice, shard_generator: torch.Generator) -> Scored:
            return propose(
                self.target,
                sampler,
                rows.stop - rows.start,
                self.sampling,
                generator=shard_generator,
                batch_size=self.sample_batch,
                contexts=None if contexts is None else contexts[rows],
                prior=prior,
                differentiable=differentiable,
            )

        return self.dist.draw(len(contexts) if contexts is not None else n, generator, draw_rows)


def replay_batch(
    pool: PosteriorPool, n: int, position: int, seed: int, source: Literal["posterior", "prior"] = "posterior"
) -> tuple[Scored, int]:
    """The next n samples of the posterior pool's training split from ``position`` (rows
    consumed so far, over all passes), each pass in its own seeded order, and the new position:
    where a run stands follows from the position alone, so a resumed run continues with the very
    same batches.

    ``source="posterior"``: the accepted samples only. They were accepted by rejection from the
    prior, so their proposal is p itself: log q = log P − log Ẑ (the training split's Z). DPG's
    weight p/q is then 1 (maximum likelihood on posterior samples) and GDC++'s advantage
    1 − π/p; no compute goes to rejected samples, and nothing stops π from piling mass onto the
    samples it has seen.

    ``source="prior"``: every prior sample, as the draws of a it is (log q = log a). GDC++'s
    advantage is then b/Z − π/a: on a fixed set of samples its loss is least where π = a·b/Z = p
    on each accepted sample and π → 0 on the rejected ones, so passes over the same samples
    pull π towards p there instead of towards their empirical frequency.
    """
    rows_from = pool.accepted if source == "posterior" else torch.arange(len(pool.draws))
    rows = []
    while len(rows) < n:
        epoch, offset = divmod(position, len(rows_from))
        order = torch.randperm(len(rows_from), generator=torch.Generator().manual_seed(seed * 7919 + epoch))
        take = order[offset : offset + n - len(rows)]
        rows += rows_from[take].tolist()
        position += len(take)
    index = torch.tensor(rows)
    if source == "prior":
        return pool.scored(index), position
    log_q = pool.log_a[index] + pool.log_factor[index] - pool.log_z().value
    return pool.scored(index, log_q=log_q), position
