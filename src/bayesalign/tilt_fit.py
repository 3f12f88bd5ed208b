"""Fitting the scorer tilt's weights (scorer_tilt.py) to the posterior: DPG's objective, maximum
likelihood of π_w on (weighted) samples of p, solved to its optimum.

Why not SGD: log π_w(x) is a sum over positions of w·φ − log Σ_v a(v) exp(w·φ(v)), concave in w,
so L-BFGS finds the one optimum in a few dozen evaluations: no learning rate, seed or pass count
decides where it ends. The features are computed once (the scorer runs on every position's
candidates once); each evaluation then touches only the tokens whose tilt can be non-zero: the
scorer's support (tokens with a non-zero score of their own), EOS, and each position's top
candidates; every other token keeps a's probability, and their mass enters the normaliser as
one number per position. That is exact, and a few hundred times smaller than the vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bayesalign.models import LanguageModel
from bayesalign.progress import Status, quiet
from bayesalign.samples import Samples
from bayesalign.scorer_tilt import FEATURES, IN_CONTEXT, ScorerTilt, TiltError


@dataclass
class Positions:
    """Every generated position of the fitted samples, compacted (see the module): a's
    log-probabilities on the fixed columns [P, F] and on the top candidates [P, K] (−inf where
    a candidate is a fixed column, ``top_col`` >= 0), the candidates' context features
    [P, K, len(CONTEXT)], the log-mass of every other token [P], the taken token's index in
    [fixed | top] (−1: another token, whose log a is ``log_taken``), its step and row, and
    log π of the taken token where π takes p's own last step (``final``; NaN elsewhere), which
    no weight changes."""

    log_fixed: torch.Tensor
    log_top: torch.Tensor
    top_col: torch.Tensor
    context: torch.Tensor
    unsatisfied: torch.Tensor
    log_rest: torch.Tensor
    taken: torch.Tensor
    log_taken: torch.Tensor
    step: torch.Tensor
    row: torch.Tensor
    log_final: torch.Tensor


class TiltFit:
    """The weighted log-likelihood of π_w on samples, as a function of w; `fit` maximises it."""

    def __init__(
        self,
        tilt: ScorerTilt,
        base: LanguageModel,
        samples: Samples,
        batch_size: int = 16,
        status: Status = quiet,
        last_step: bool = True,
    ) -> None:
        """``last_step=False`` leaves out the constant log π of p's own last step (the tilt's
        ``final``): the fit does not need it, no weight changes it, and it costs ``final`` plus
        the support's scorer calls per sample. `log_prob` and `fit`'s mean are then log π of
        the other positions."""
        if base.tilt is not None:
            raise TiltError("the tilt's base model is itself tilted: fit on the untilted model")
        if len(samples) == 0:
            raise TiltError("no samples to fit the tilt on")
        self.tilt, self.n_rows, self.last_step = tilt, len(samples), last_step
        features = tilt.token_features
        support = tilt.support.clone()
        support[tilt.eos] = True
        self.fixed = support.nonzero().squeeze(1)  # [F]
        self.col_of = torch.full((tilt.vocab,), -1, dtype=torch.long)
        self.col_of[self.fixed] = torch.arange(len(self.fixed))
        self.fixed_features = features[self.fixed]  # [F, 2]
        self.eos_col = int(self.col_of[tilt.eos])
        parts = []
        with torch.no_grad():
            for start, chunk in _chunks(samples, batch_size):
                status("scorer tilt: features of the training samples", start, len(samples))
                parts.append(self._positions(base, chunk, start))
        self.pos = Positions(*(torch.cat(x) for x in zip(*(vars(p).values() for p in parts), strict=True)))

    def _positions(self, base: LanguageModel, chunk: Samples, start: int) -> Positions:
        log_base = torch.log_softmax(base.generated_logits(chunk)[0].float(), dim=-1).cpu()
        cols = []
        for r in range(len(chunk)):
            n = int(chunk.mask[r].sum())
            ids = chunk.ids[r, :n].tolist()
            lb, taken_ids = log_base[r, :n], chunk.ids[r, :n]
            cands = self.tilt.candidates([ids[:t] for t in range(n)], lb)
            top_col = self.col_of[cands.top]
            special = torch.zeros_like(lb, dtype=torch.bool)
            special[:, self.fixed] = True
            special.scatter_(1, cands.top, True)
            in_top = cands.top == taken_ids[:, None]
            taken = torch.where(
                self.col_of[taken_ids] >= 0,
                self.col_of[taken_ids],
                torch.where(in_top.any(-1), len(self.fixed) + in_top.float().argmax(-1), -1),
            )
            log_final = torch.full((n,), float("nan"))
            if self.tilt.is_final(n - 1):
                log_final[-1] = 0.0  # without ``last_step``: this position counts for nothing
            if self.tilt.is_final(n - 1) and self.last_step:
                last = lb[n - 1] + self.tilt.final_tilt([ids[:-1]], lb[n - 1 :])[0]
                log_final[-1] = torch.log_softmax(last, dim=-1)[ids[-1]]
            cols.append(
                Positions(
                    log_fixed=lb[:, self.fixed],
                    log_top=lb.gather(1, cands.top).masked_fill(top_col >= 0, float("-inf")),
                    top_col=top_col,
                    context=cands.context,
                    unsatisfied=cands.unsatisfied,
                    log_rest=lb.masked_fill(special, float("-inf")).double().logsumexp(-1),
                    taken=taken,
                    log_taken=lb.gather(1, taken_ids[:, None])[:, 0],
                    step=torch.arange(n),
                    row=torch.full((n,), start + r),
                    log_final=log_final,
                )
            )
        return Positions(*(torch.cat(x) for x in zip(*(vars(p).values() for p in cols), strict=True)))

    def log_prob(self, weights: torch.Tensor) -> torch.Tensor:
        """log π_w(x) per sample [R], float64, differentiable in ``weights`` [buckets, features]. The
        per-position terms are float32 (the [P, F] part is most of the cost); their sum per
        sample is float64."""
        pos, n_fixed = self.pos, len(self.fixed)
        w = weights.float()[self.tilt.bucket(pos.step)]  # [P, features]
        tilt_fixed = w[:, :2] @ self.fixed_features.T  # [P, F]
        end = torch.zeros_like(tilt_fixed)
        end[:, self.eos_col] = pos.unsatisfied.float() * w[:, -1]
        context = (pos.context * w[:, None, IN_CONTEXT]).sum(-1)  # [P, K]
        into_fixed = torch.where(pos.top_col >= 0, pos.top_col, n_fixed)  # n_fixed: a dropped column
        spill = torch.zeros(len(w), n_fixed + 1).scatter_add(1, into_fixed, context)
        fixed = pos.log_fixed + tilt_fixed + end + spill[:, :n_fixed]
        logits = torch.cat([fixed, pos.log_top + context], 1)
        log_z = torch.logsumexp(torch.cat([logits, pos.log_rest.float()[:, None]], 1), dim=-1)
        chosen = logits.gather(1, pos.taken.clamp(min=0)[:, None])[:, 0]
        chosen = torch.where(pos.taken >= 0, chosen, pos.log_taken)
        term = torch.where(torch.isnan(pos.log_final), chosen - log_z, pos.log_final)
        return torch.zeros(self.n_rows, dtype=torch.float64).index_add(0, pos.row, term.double())

    def fit(
        self,
        weights: torch.Tensor | None = None,
        *,
        l2: float = 1e-4,
        iters: int = 100,
        mask: torch.Tensor | None = None,
        status: Status = quiet,
    ) -> float:
        """Maximise Σ ω log π_w / Σ ω − l2/2·|w|² by L-BFGS and set the tilt's weights; returns
        the weighted mean log π_w at the optimum. ``weights`` ω per sample (default 1: samples
        of p), ``mask`` [buckets, features] keeps some weights at 0. The small ``l2`` keeps w finite
        where a feature separates (e.g. at the last position, where up/down decide b)."""
        omega = torch.ones(self.n_rows, dtype=torch.float64) if weights is None else weights.double()
        valid = omega.shape == (self.n_rows,) and bool(torch.isfinite(omega).all() and (omega >= 0).all())
        if not valid or omega.sum() <= 0:
            raise TiltError(f"tilt fit: sample weights must be {self.n_rows} finite values >= 0, not all 0")
        omega = omega / omega.sum()
        keep = torch.ones(len(self.tilt.edges), len(FEATURES)) if mask is None else mask.float()
        w = torch.zeros_like(keep, requires_grad=True)
        # a change of 1e-7 nats per sample in the objective is far below any held-out difference
        opt = torch.optim.LBFGS(
            [w], lr=1, max_iter=iters, tolerance_change=1e-7, line_search_fn="strong_wolfe"
        )
        calls = 0

        def closure() -> torch.Tensor:
            nonlocal calls
            opt.zero_grad()
            likelihood = (omega * self.log_prob(w * keep)).sum()
            loss = -likelihood + 0.5 * l2 * (w * keep).double().pow(2).sum()
            loss.backward()
            calls += 1
            if calls % 10 == 0:  # L-BFGS evaluates at most 1.25 × iters times; one label, one ETA
                status("tilt fit: L-BFGS evaluations", calls, round(1.25 * iters))
            return loss

        opt.step(closure)
        self.tilt.weights = (w * keep).detach()
        with torch.no_grad():
            return float((omega * self.log_prob(self.tilt.weights)).sum())


def _chunks(samples: Samples, size: int):
    for start in range(0, len(samples), size):
        yield start, samples.select(range(start, min(start + size, len(samples))))
