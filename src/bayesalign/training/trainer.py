"""One loop for every approximation method: sample x ~ q → score → weights → loss → step.

Bookkeeping that every method shares lives here: the running estimate of Z, the proposal q
(fixed at a, equal to π, or KL-adaptive), evaluation of π *and* q, checkpoints. The objective
is a per-sample loss (objectives/); the loop never asks which one it is running.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from safetensors.torch import load_file, save_file

from bayesalign import estimators as est
from bayesalign.atomic import write_atomic
from bayesalign.config import Config
from bayesalign.config.build import build_evaluator, load_eval_contexts
from bayesalign.contexts import evaluation_rows, load_contexts, step_contexts
from bayesalign.diagnostics import GradientStats, gradient_variance
from bayesalign.estimators import ZeroPartitionError
from bayesalign.evaluator import unsatisfied_message
from bayesalign.exact import ExactTarget
from bayesalign.models import LanguageModel, Samples
from bayesalign.objectives import Batch, Objective, PolicyOutput, policy_output
from bayesalign.proposals import Scored, propose
from bayesalign.sampling_backends import VLLMSampler
from bayesalign.targets import Target
from bayesalign.training.checkpoint import load_newest_checkpoint, save_checkpoint
from bayesalign.training.distributed import Distributed, enable_gradient_checkpointing
from bayesalign.training.interrupt import TrainingInterrupted, stop_at_step_boundary
from bayesalign.training.run import RunFolder


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message says which quantity caused it."""


@dataclass
class TrainState:
    step: int = 0
    samples_seen: int = 0  # samples drawn from q for training and proposal checks
    z_log_sum: float = float("-inf")  # log Σ P/q over every sample drawn from a proposal
    z_count: int = 0
    proposal_updates: int = 0
    proposal_is_copy: bool = False  # q is a frozen copy of an earlier π (else a, or π itself)
    replay_position: int = 0  # training.replay_pool: pool rows consumed so far (over all passes)
    best_step: int = -1  # training.keep_best: the step of the best evaluated π (-1: none yet)
    best_kl: float = float("inf")  # ... and its pool KL(p‖π)
    last_check: dict[str, float] = field(default_factory=dict)  # repeated in later records

    @property
    def log_z(self) -> float:
        return self.z_log_sum - math.log(self.z_count) if self.z_count else float("nan")


def proposal_should_update(criterion: str, policy_score: float, proposal_score: float) -> bool:
    """KL-adaptive rule: replace q by π iff π is strictly closer to p (by KL or TV)."""
    if criterion not in ("kl", "tv"):
        raise ValueError(f"unknown proposal criterion {criterion!r}; valid: kl, tv")
    return policy_score < proposal_score


class Trainer:
    def __init__(
        self,
        policy: LanguageModel,
        target: Target,
        objective: Objective,
        config: Config,
        run: RunFolder | None = None,
        distributed: Distributed | None = None,
    ) -> None:
        """``distributed``: this process's place among the processes of an ``accelerate launch``
        (built from the config when omitted; one process without a launcher)."""
        self.policy, self.target, self.objective = policy, target, objective
        if (check_target := getattr(objective, "check_target", None)) is not None:
            check_target(target)  # an objective that cannot work with this target says so now
        on_policy = config.training.proposal.update == "on_policy"
        if getattr(objective, "requires_on_policy", False) and not on_policy:
            raise ValueError(
                f"{objective.name} trains on samples from the policy itself; set "
                f"training.proposal.update: on_policy (it is {config.training.proposal.update!r})"
            )
        self.needs_hidden = getattr(objective, "needs_hidden", False)
        self.reads_prior = getattr(objective, "reads_prior", True)
        self.base = target.base
        self.config = config
        self.train_cfg, self.eval_cfg = config.training, config.eval
        self.sampling = config.sampling.params()
        self.sample_batch = config.sampling.batch_size
        self.run = run
        self.status: Callable[[str], None] = lambda phase: None  # what the loop is doing now
        self.proposal: LanguageModel = policy if on_policy else self.base
        self.state = TrainState()
        self.best_params: dict[str, torch.Tensor] | None = None  # training.keep_best
        self.dist = distributed or Distributed(self.train_cfg.sample_shards, self.train_cfg.mixed_precision)
        self.dist.check_batches(self.train_cfg.minibatch, self.train_cfg.micro)
        if self.dist.world > 1 and hasattr(objective, "after_update"):
            raise ValueError(
                f"{objective.name} updates running statistics from the samples each process trains "
                "on, which differ between processes; train it on one process"
            )
        for model in (policy, self.base):
            model.module.to(self.dist.device)
        if self.train_cfg.gradient_checkpointing:
            enable_gradient_checkpointing(policy.module)
        self.params = [p for p in policy.module.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("the policy has no trainable parameters")
        # the objective's own weights (a value head): outside the policy, so no wrapper syncs them
        attach = getattr(objective, "attach", None)
        self.own_params: list[torch.nn.Parameter] = attach(policy) if attach is not None else []
        self.params += self.own_params
        opt = torch.optim.AdamW if self.train_cfg.optimizer == "adamw" else torch.optim.Adam
        optimizer = opt(self.params, lr=self.train_cfg.lr, weight_decay=self.train_cfg.weight_decay)
        warmup = self.train_cfg.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda update: min(1.0, (update + 1) / warmup) if warmup else 1.0
        )
        # accelerate wraps the policy's module (DDP, FSDP, DeepSpeed; itself on one process) and
        # the optimizer; forwards that train go through the wrapper (Distributed.training_forward)
        self.wrapper, self.optimizer = self.dist.accelerator.prepare(policy.module, optimizer)
        self.vllm = VLLMSampler(policy) if config.sampling.backend == "vllm" else None
        seed = self.train_cfg.seed
        self.generator = torch.Generator().manual_seed(seed)
        self.eval_generator = torch.Generator().manual_seed(seed + 1)
        self.contexts: list[str] | None = None  # conditional targets: contexts c of P_c
        if config.contexts is not None:
            self.contexts = load_contexts(config.contexts.train, config.contexts.field)
        self.eval_contexts, references = load_eval_contexts(config)
        self.evaluator = build_evaluator(
            config,
            target,
            lambda m, n, g: self.draw(m, n, g, evaluation=True),
            self.eval_generator,
            eval_contexts=self.eval_contexts,
            references=references,
            status=lambda p: self.status(p),
        )

    # -- sampling and scoring ------------------------------------------------------------------
    def draw(
        self,
        model: LanguageModel,
        n: int,
        generator: torch.Generator,
        *,
        evaluation: bool = False,
        prior: bool = True,
    ) -> Scored:
        """n samples from ``model`` scored under the target (without log a and log P when not
        ``prior``). With contexts: for training, contexts.per_step contexts drawn at random,
        n/per_step samples each; for evaluation, the fixed evaluation contexts, n // len(them)
        samples each. The draw is sharded over processes (training/distributed.py); every
        process gets all n samples."""
        who = "π" if model is self.policy else "a" if model is self.base else "q"
        self.status(f"sampling {n} from {who}")
        contexts = None
        if self.contexts is not None and evaluation:
            contexts = evaluation_rows(self.eval_contexts, n)
        elif self.contexts is not None:
            contexts = step_contexts(self.contexts, self.config.contexts.per_step, n, generator)
        sampler = self.vllm if model is self.policy and self.vllm is not None else model

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
            )

        return self.dist.draw(len(contexts) if contexts is not None else n, generator, draw_rows)

    def _policy_log_prob(self, draw: Scored) -> torch.Tensor:
        """log π on samples drawn from the proposal (free when the proposal is π)."""
        return self.evaluator.policy_log_prob(self.policy, self.proposal, draw)

    def _accumulate_z(self, draw: Scored) -> None:
        """Add a batch from the proposal to the running estimate of Z (refusing a zero Z)."""
        log_w = draw.log_target - draw.log_q
        z_log_sum = torch.logaddexp(torch.tensor(self.state.z_log_sum), torch.logsumexp(log_w, 0)).item()
        if z_log_sum == float("-inf"):
            raise ZeroPartitionError(unsatisfied_message(self.target, draw))
        self.state.z_log_sum = z_log_sum
        self.state.z_count += len(log_w)

    # -- training ------------------------------------------------------------------------------
    def _replay_batch(self, n: int) -> Scored:
        """The next n exact p-samples of the posterior pool's training split, in passes, each
        pass in its own seeded order (where the run stands follows from the position alone, so
        a resumed run continues with the very same batches).

        They were accepted by rejection from the prior, so their proposal is p itself: log q =
        log P − log Ẑ (the training split's Z). DPG's weight p/q is then 1 (maximum likelihood on
        posterior samples) and GDC++'s advantage 1 − π/p; no compute goes to rejected samples.
        """
        self.evaluator.ensure_pool()  # drawn (or read from the cache) once
        pool = self.evaluator.train_pool
        accepted, rows = pool.accepted, []
        while len(rows) < n:
            epoch, offset = divmod(self.state.replay_position, len(accepted))
            seed = self.train_cfg.seed * 7919 + epoch
            order = torch.randperm(len(accepted), generator=torch.Generator().manual_seed(seed))
            take = order[offset : offset + n - len(rows)]
            rows += accepted[take].tolist()
            self.state.replay_position += len(take)
        index = torch.tensor(rows)
        return pool.scored(index, log_q=pool.log_a[index] + pool.log_factor[index] - pool.log_z().value)

    def train_step(self) -> dict[str, float]:
        cfg = self.train_cfg
        if cfg.replay_pool:
            draw = self._replay_batch(cfg.batch_size)
        else:
            draw = self.draw(self.proposal, cfg.batch_size, self.generator, prior=self.reads_prior)
        if draw.scored_prior:
            self._accumulate_z(draw)
        batch = self._batch(draw)
        losses, norms = [], []
        updates = cfg.epochs * (len(batch) // cfg.minibatch)
        for _ in range(cfg.epochs):
            order = torch.randperm(len(batch), generator=self.generator)
            for minibatch in order.split(cfg.minibatch):
                self.status(f"update {len(losses) + 1}/{updates}")
                self.optimizer.zero_grad(set_to_none=True)
                mine = self.dist.my_rows(minibatch)  # this process's share; gradients are averaged
                micros = mine.split(cfg.micro)
                total = 0.0
                for i, micro in enumerate(micros):
                    part = batch.select(micro)
                    with self.dist.training_forward(self.policy, self.wrapper, sync=i == len(micros) - 1):
                        out = policy_output(self.policy, part.samples, hidden=self.needs_hidden)
                        loss = self.objective.per_sample_loss(part, out).sum() / len(mine)
                        if not torch.isfinite(loss):
                            raise NonFiniteLossError(self._non_finite_message(part, out.log_prob, loss))
                        self.dist.accelerator.backward(loss)
                    total += loss.item()
                self.dist.average_gradients(self.own_params)
                clip = cfg.max_grad_norm if cfg.max_grad_norm is not None else float("inf")
                norm = self.dist.accelerator.clip_grad_norm_(self.params, clip)
                norms.append(float("nan") if norm is None else float(norm))  # None: DeepSpeed clips itself
                self.optimizer.step()
                self.scheduler.step()
                if (after_update := getattr(self.objective, "after_update", None)) is not None:
                    after_update()  # running statistics advance once per update (objectives/base.py)
                losses.append(total)
        if self.vllm is not None:
            self.vllm.sync()  # the engine samples the next step with the updated weights
        self.state.step += 1
        self.state.samples_seen += len(batch)
        metrics = self.dist.mean({"loss": sum(losses) / len(losses)})  # each process: its share's mean
        metrics |= {"grad_norm": sum(norms) / len(norms), "lr": self.scheduler.get_last_lr()[0]}
        if (step_metrics := getattr(self.objective, "step_metrics", None)) is not None:
            metrics |= step_metrics()
        return metrics

    def _batch(self, draw: Scored) -> Batch:
        """The objective's view of a draw, after its once-per-step ``prepare`` hook."""
        reward = self.target.reward(draw.evidence) if self.target.defines_reward else None
        batch = Batch(
            draw.samples,
            draw.log_q,
            draw.log_target,
            draw.evidence,
            self.state.log_z,
            token_log_a=draw.token_log_a,
            reward=reward,
        )
        if (prepare := getattr(self.objective, "prepare", None)) is not None:
            self.status("preparing advantages")
            batch = prepare(batch, self._frozen_output(batch.samples))
        return batch

    def gradient_stats(self, n: int) -> GradientStats:
        """Per-sample gradient statistics of the objective on ``n`` fresh samples from q (drawn
        with the evaluation generator, so training's random stream is untouched)."""
        draw = self.draw(self.proposal, n, self.eval_generator, prior=self.reads_prior)
        return gradient_variance(self.policy, self.objective, self._batch(draw), hidden=self.needs_hidden)

    @torch.no_grad()
    def _frozen_output(self, samples: Samples) -> PolicyOutput:
        """π on a step's samples before any update, detached (what ``prepare`` hooks read).
        Free when the samples were drawn from π ancestrally and no hidden states are needed."""
        if self.policy is self.proposal and self.sampling.is_ancestral and not self.needs_hidden:
            return PolicyOutput(samples.token_log_q, samples.mask)
        parts = [
            policy_output(self.policy, chunk, hidden=self.needs_hidden)
            for chunk in samples.chunks(self.train_cfg.micro)
        ]
        hidden = torch.cat([p.hidden for p in parts]) if self.needs_hidden else None
        return PolicyOutput(
            torch.cat([p.token_log_probs for p in parts]), torch.cat([p.mask for p in parts]), hidden
        )

    def _non_finite_message(self, part: Batch, log_pi: torch.Tensor, loss: torch.Tensor) -> str:
        weights = (
            f"max weight p/q = {part.normalised_weights.max().item():.4g}, log Z = {part.log_z:.4g}, "
            if part.log_target is not None
            else ""
        )
        return (
            f"{self.objective.name} loss is {loss.item()} at step {self.state.step + 1}: {weights}"
            f"min log π = {log_pi.min().item():.4g}. Lower training.lr or check the scorers."
        )

    def check_proposal(self) -> dict[str, float]:
        """KL-adaptive proposal: on fresh samples from q, replace q by π if π is closer to p."""
        cfg = self.train_cfg.proposal
        draw = self.draw(self.proposal, cfg.samples, self.generator)
        self._accumulate_z(draw)
        self.state.samples_seen += len(draw.samples)
        log_pi = self._policy_log_prob(draw)
        measure = est.kl_target_model if cfg.criterion == "kl" else est.tv_target_model
        pi_score = measure(draw.log_target, draw.log_q, log_pi).value
        q_score = measure(draw.log_target, draw.log_q, draw.log_q).value
        replace = proposal_should_update(cfg.criterion, pi_score, q_score)
        if replace:
            self.proposal = self.policy.frozen_copy()
            self.state.proposal_is_copy = True
            self.state.proposal_updates += 1
        return {
            f"check_{cfg.criterion}_p_pi": pi_score,
            f"check_{cfg.criterion}_p_q": q_score,
            "proposal_replaced": float(replace),
        }

    # -- evaluation ----------------------------------------------------------------------------
    @property
    def exact(self) -> list[ExactTarget] | None:
        return self.evaluator.exact

    def evaluate(self) -> dict[str, float]:
        """The evaluator's metrics of π and q now (evaluator.py); π's texts go to the run folder."""
        metrics, pi_draw = self.evaluator.evaluate(self.policy, self.proposal)
        if self.run is not None and self.eval_cfg.save_samples:
            self.run.write_samples(self.state.step, self._sample_rows(pi_draw))
        return metrics

    def _sample_rows(self, draw: Scored) -> list[dict]:
        rows = []
        for i in range(min(self.eval_cfg.save_samples, len(draw.samples))):
            row = {"text": draw.samples.texts[i], "log_pi": draw.log_q[i].item()}
            row |= {name: s[i].item() for name, s in draw.evidence.scores.items()}
            rows.append(row)
        return rows

    # -- the loop ------------------------------------------------------------------------------
    def resume(self) -> bool:
        """Continue from the run folder's newest usable checkpoint (a damaged newer one is
        skipped with a warning); False when there is none, and then the records of the
        interrupted first steps are dropped too, so that the run starts over cleanly."""
        if self.run is None:
            return False
        folder = load_newest_checkpoint(self, self.run)
        self.run.truncate_metrics(self.state.step if folder is not None else -1)
        best = self.run.path / "best.safetensors"
        if folder is not None and self.train_cfg.keep_best and self.state.best_step >= 0 and best.exists():
            self.best_params = load_file(str(best))
        return folder is not None

    # -- keeping the best policy ---------------------------------------------------------------
    def _remember_if_best(self, record: dict) -> None:
        """training.keep_best: keep π's trainable weights when its pool KL(p‖π) (validation
        split) is the lowest so far; the run folder holds them too (best.safetensors), so a
        resumed run still knows them. The first record is π = a, so the prior is a candidate."""
        kl = record.get("pool_kl_p_pi")
        if not self.train_cfg.keep_best or kl is None or not kl < self.state.best_kl:
            return
        self.state.best_kl, self.state.best_step = kl, self.state.step
        self.best_params = {
            n: p.detach().clone().contiguous()
            for n, p in self.policy.module.named_parameters()
            if p.requires_grad
        }
        if self.run is not None and self.dist.is_main:
            tmp = self.run.path / "best.safetensors.tmp"
            save_file(self.best_params, str(tmp))
            tmp.replace(self.run.path / "best.safetensors")

    def restore_best(self) -> dict | None:
        """Put the best evaluated weights back into π (training.keep_best); returns what was
        chosen ({"step", "pool_kl_p_pi"}), or None when nothing is kept."""
        if not self.train_cfg.keep_best or self.best_params is None:
            return None
        params = dict(self.policy.module.named_parameters())
        with torch.no_grad():
            for name, value in self.best_params.items():
                params[name].copy_(value)
        return {"step": self.state.best_step, "pool_kl_p_pi": self.state.best_kl}

    def fit(
        self,
        on_record: Callable[[dict], None] | None = None,
        on_step: Callable[[int], None] | None = None,
    ) -> list[dict]:
        """Train to ``training.steps``; returns the evaluation records written on the way.
        ``on_record`` sees every evaluation record, ``on_step`` every finished step."""
        records: list[dict] = []
        started = time.perf_counter()

        def record(train: dict[str, float]) -> None:
            rec = {
                "step": self.state.step,
                "samples_seen": self.state.samples_seen,
                "proposal_updates": self.state.proposal_updates,
                "processes": self.dist.world,
                "running_log_z": self.state.log_z,
                **train,
                **self.state.last_check,
                **self.evaluate(),
                "seconds": time.perf_counter() - started,
            }
            records.append(rec)
            self._remember_if_best(rec)
            if self.run is not None:
                self.run.log_metrics(rec)
            if on_record is not None:
                on_record(rec)

        steps, proposal = self.train_cfg.steps, self.train_cfg.proposal
        if self.run is not None and self.dist.is_main and (curve := self.evaluator.frontier_curve()):
            write_atomic(self.run.path / "frontier.json", json.dumps(curve))  # for the report's plot
        with stop_at_step_boundary(self.dist.world == 1) as stop:
            if self.state.step == 0:
                record({})
            while self.state.step < steps:
                if stop.signum is not None:
                    raise self._stop(stop.signum)
                train = self.train_step()
                step = self.state.step
                if on_step is not None:
                    on_step(step)
                if proposal.update == "adaptive" and step % proposal.every == 0:
                    self.state.last_check = self.check_proposal()
                if step % self.eval_cfg.every == 0 or step == steps:
                    record(train)
                at_checkpoint = step % self.config.checkpoint.every == 0 or step == steps
                if self.run is not None and self.dist.is_main and at_checkpoint:
                    save_checkpoint(self, self.run.checkpoint_dir(step), self.config.checkpoint.keep)
        return records

    def _stop(self, signum: int) -> TrainingInterrupted:
        """Checkpoint the step just finished (unless it already is, or nothing was trained: a
        resume then starts over), to stop on a signal without losing the steps since the last."""
        step, folder = self.state.step, None
        if self.run is not None and step > 0:
            folder = self.run.checkpoint_dir(step)
            if self.dist.is_main and not folder.is_dir():
                save_checkpoint(self, folder, self.config.checkpoint.keep)
        return TrainingInterrupted(signum, step, folder)
