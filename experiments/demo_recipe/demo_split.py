"""The demo's pool and its train/held-out split, shared by the demo-recipe probes (logit_bias.py,
twist.py, steering.py): the same cached prior draws (seed 0) and the same permutation (``seed``)
give every probe the same held-out p-samples, so their held-out KL(p‖π) can be paired."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

from bayesalign import estimators as est
from bayesalign.builtin_models import cache_root
from bayesalign.config import load_config
from bayesalign.config.build import build_models, build_target
from bayesalign.models import LanguageModel
from bayesalign.pools import PosteriorPool
from bayesalign.prior_draws import PoolCache, PriorDraws, draw_prior
from bayesalign.proposals import Scored
from bayesalign.samples import Samples
from bayesalign.scorer_tilt import ScorerTilt
from bayesalign.scorers import Scorer
from bayesalign.targets import Target
from bayesalign.training.args import SamplingParams


@dataclass
class DemoSplit:
    draws: PriorDraws
    train_rows: torch.Tensor
    val_rows: torch.Tensor
    full: PosteriorPool  # the whole pool: log Z and the KL frontier
    val: PosteriorPool  # the held-out rows: held-out KL(p‖π)

    def train_pool(self, target: Target) -> PosteriorPool:
        return PosteriorPool(target, self.rows(self.train_rows))

    def rows(self, index: torch.Tensor) -> PriorDraws:
        return PriorDraws(self.draws.samples.select(index), self.draws.uniform[index])


def demo_split(target: Target, params, *, pool: int, val: float, seed: int, batch: int) -> DemoSplit:
    """Draw (or load from the cache) ``pool`` samples of the demo's prior and hold out a ``val``
    share of them, chosen by ``seed``."""
    draws, _ = draw_prior(
        target.base, pool, params, seed=0, batch_size=batch, cache=PoolCache(cache_root() / "pools")
    )
    n_val = int(len(draws) * val)
    order = torch.randperm(len(draws), generator=torch.Generator().manual_seed(seed))
    train_rows, val_rows = order[n_val:], order[:n_val]
    held_out = PriorDraws(draws.samples.select(val_rows), draws.uniform[val_rows])
    full, val_pool = PosteriorPool(target, draws), PosteriorPool(target, held_out)
    return DemoSplit(draws, train_rows, val_rows, full, val_pool)


def split_arguments(parser: argparse.ArgumentParser, *, eval_samples: int) -> None:
    """The options every probe shares: the pool and its split, the fresh samples of the kept π,
    threads and the output file."""
    parser.add_argument("--pool", type=int, default=2560)
    parser.add_argument("--val", type=float, default=0.33, help="share of the pool's rows held out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval", type=int, default=eval_samples, help="fresh samples of the kept π")
    parser.add_argument("--batch", type=int, default=64, help="sampling batch size")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)


@dataclass
class Demo:
    """The demo's models, target and sampling parameters, and the split of its pool."""

    policy: LanguageModel
    prior: LanguageModel
    target: Target
    params: SamplingParams
    split: DemoSplit

    def p_samples(self) -> tuple[Samples, Samples]:
        """The exact p-samples of the training split and of the held-out split."""
        return self.split.train_pool(self.target).p_samples(), self.split.val.p_samples()

    def scorer_tilt(
        self, *, top: int, edges: tuple[int, ...], workers: int = 0, final: int = 0
    ) -> ScorerTilt:
        """The scorer tilt of the demo's constraint over its prior, weights at 0."""
        vocab = self.prior.module.get_output_embeddings().weight.shape[0]
        return ScorerTilt(
            self.target.terms[0].scorer,
            self.prior.tokenizer,
            vocab,
            horizon=self.params.max_new_tokens,
            top=top,
            edges=edges,
            workers=workers,
            final=final,
        )


def load_demo(args: argparse.Namespace, *, lora: bool = True) -> Demo:
    """The demo's config (src/bayesalign/configs/demo.yaml) built with ``args.seed``, and its pool
    split by the options of :func:`split_arguments`; ``lora=False`` builds the models without the
    config's LoRA (the twist probe puts its own on the twist's copy)."""
    torch.set_num_threads(args.threads)
    config = load_config("src/bayesalign/configs/demo.yaml")
    model = config.model if lora else config.model.model_copy(update={"lora": None})
    policy, prior = build_models(model, config.prompt, args.seed)
    target = build_target(config.target, prior, config.sampling)
    params = config.sampling.params()
    split = demo_split(target, params, pool=args.pool, val=args.val, seed=args.seed, batch=args.batch)
    return Demo(policy, prior, target, params, split)


def append_record(path: str | None, record: dict) -> None:
    """One run's record as a line of the jsonl file ``path`` (``--out``; None: not kept)."""
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")


class Clock:
    """Wall and CPU seconds since it was made; calling it gives the prefix of a progress line."""

    def __init__(self) -> None:
        self.started_wall, self.started_cpu = time.perf_counter(), time.process_time()

    def wall(self) -> float:
        return time.perf_counter() - self.started_wall

    def cpu(self) -> float:
        return time.process_time() - self.started_cpu

    def __call__(self) -> str:
        return f"[{self.wall():6.0f}s wall {self.cpu():6.0f}s cpu]"


@dataclass
class FreshMetrics:
    """Satisfaction, KL(π‖a) and the frontier excess on fresh samples of π."""

    satisfaction: est.Estimate
    kl_pi_a: est.Estimate
    frontier_kl: float
    excess: float

    def record(self) -> dict[str, float]:
        return {
            "satisfaction": self.satisfaction.value,
            "satisfaction_se": self.satisfaction.stderr,
            "kl_pi_a": self.kl_pi_a.value,
            "kl_pi_a_se": self.kl_pi_a.stderr,
            "frontier_excess": self.excess,
        }

    def line(self) -> str:
        return (
            f"satisfaction {self.satisfaction:.3f}  KL(π‖a) {self.kl_pi_a:.3f}  "
            f"frontier KL* {self.frontier_kl:.3f}  excess {self.excess:.2f}"
        )


def fresh_metrics(draw: Scored, log_a: torch.Tensor, full: PosteriorPool) -> FreshMetrics:
    """``draw``: fresh samples of π (log q = log π); ``log_a``: the prior's log-probabilities of them."""
    sat = est.mean(draw.evidence.satisfied)
    kl_pi_a = est.kl_on_samples(draw.log_q, log_a)
    frontier = full.frontier()
    return FreshMetrics(sat, kl_pi_a, frontier.kl(sat.value), frontier.excess(sat.value, kl_pi_a.value))


def paired_against(path: str, args: argparse.Namespace, log_pi: torch.Tensor) -> list[dict]:
    """This probe's held-out KL(p‖π) minus that of each probe.py run in ``path`` on the same pool
    and split, paired per held-out p-sample (``log_pi``: this π's log-probabilities of them);
    negative: this π is nearer p. Runs whose pool was drawn elsewhere (another count of held-out
    p-samples) are skipped: their samples are not these."""
    rows = []
    for line in Path(path).read_text().splitlines():
        probe = json.loads(line)
        other = probe.get("val_log_pi", {}).get("best")
        if probe["args"]["pool"] != args.pool or probe["args"]["seed"] != args.seed:
            continue
        if other is None or len(other) != len(log_pi):
            continue
        diff = est.mean(torch.tensor(other, dtype=torch.float64) - log_pi.double())
        rows.append(
            {"probe": probe["args"], "val_kl": probe["val_kl"], "difference": diff.value, "se": diff.stderr}
        )
        print(
            f"  against probe {probe['args'].get('objective')} (lr {probe['args']['lr']}, held-out "
            f"{probe['val_kl']:.3f}): this π − it, paired: {diff:.4f}",
            flush=True,
        )
    return rows


@dataclass
class TokenScores:
    """The constraint's scorer with its threshold removed (real-valued), each vocabulary token's
    text, and the scorer on each token's text alone split into its positive and negative parts
    [V, 2]: a lexicon scorer's knowledge of every word, also of those no training p-sample holds."""

    scorer: Scorer
    threshold: float
    texts: list[str]
    features: torch.Tensor


def token_scores(prior: LanguageModel, target: Target, vocab: int) -> TokenScores:
    """:class:`TokenScores` for the first constraint of ``target`` (the demo's VADER threshold)."""
    constraint = target.terms[0].scorer
    scorer = dataclasses.replace(constraint, threshold=None)
    texts = [prior.tokenizer.decode([v]) for v in range(vocab)]
    s = scorer(texts).float()
    return TokenScores(scorer, constraint.threshold, texts, torch.stack([s.clamp(min=0), s.clamp(max=0)], 1))


def sample_fresh(model: LanguageModel, demo: Demo, n: int, batch: int) -> tuple[FreshMetrics, Samples]:
    """n fresh samples of ``model`` (a fixed seed, in batches of ``batch``), and their
    satisfaction, KL(π‖a) and frontier excess against the demo's whole pool."""
    generator = torch.Generator().manual_seed(1234)
    samples = Samples.concat(
        [model.sample(min(batch, n - s), demo.params, generator=generator) for s in range(0, n, batch)]
    )
    log_a = demo.prior.log_prob_frozen(samples, batch_size=32).double()
    draw = SimpleNamespace(evidence=demo.target.evidence(samples), log_q=samples.log_q.double())
    return fresh_metrics(draw, log_a, demo.split.full), samples


def tilt_fit_record(split: DemoSplit, weights: torch.Tensor, mean_log_pi: float, kl, gain) -> dict:
    """What every tilt probe records of one fit: log Z, the weights, the training mean log π_w,
    and the held-out KL(p‖π) and paired gain over the prior (``kl``, ``gain``: `Estimate`s)."""
    return {
        "log_z": split.full.log_z().value,
        "weights": weights.tolist(),
        "train_mean_log_pi": mean_log_pi,
        "val_kl": kl.value,
        "val_kl_se": kl.stderr,
        "gain": gain.value,
        "gain_se": gain.stderr,
    }
