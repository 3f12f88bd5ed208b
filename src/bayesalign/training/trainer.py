"""One loop for every approximation method: sample x ~ q → score → weights → loss → step.

Bookkeeping that every method shares lives here: the running estimate of Z, the proposal q
(fixed at a, equal to π, or KL-adaptive), evaluation of π *and* q, checkpoints. The objective
is a per-sample loss (objectives/); the loop never asks which one it is running.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable

import torch

from bayesalign import sharding
from bayesalign.atomic import write_atomic
from bayesalign.diagnostics import GradientStats, gradient_variance
from bayesalign.estimators import ZeroPartitionError
from bayesalign.evaluator import Evaluator, unsatisfied_message
from bayesalign.exact import ExactTarget
from bayesalign.models import LanguageModel
from bayesalign.objectives import Batch, Objective, frozen_policy_output
from bayesalign.progress import Status, quiet
from bayesalign.proposals import PriorPass, Scored
from bayesalign.runs import RunFolder
from bayesalign.sampling_backends import VLLMSampler
from bayesalign.targets import Target
from bayesalign.training.adaptive import (
    NonFiniteLossError,
    distances_to_target,
    non_finite_message,
    proposal_should_update,
)
from bayesalign.training.args import CheckpointArgs, SamplingArgs, TrainArgs
from bayesalign.training.averaging import weight_average
from bayesalign.training.buffer import SampleBuffer, weighted_rows
from bayesalign.training.distributed import Distributed, enable_gradient_checkpointing
from bayesalign.training.draws import Draws, replay_batch
from bayesalign.training.interrupt import TrainingInterrupted, stop_at_step_boundary
from bayesalign.training.optimizer import make_optimizer
from bayesalign.training.resumable import Resumable
from bayesalign.training.sampling_pass import reuses_sampling_pass
from bayesalign.training.setup_checks import refuse_unworkable
from bayesalign.training.state import BestPolicy, TrainState
from bayesalign.training.timing import PhaseClock


class Trainer(Resumable):
    """Trains ``policy`` towards ``target`` with ``objective`` (objectives/), as ``args`` say::

        trainer = Trainer(policy, target, GDCPlusPlus(), TrainArgs(steps=30, batch_size=64))
        for record in trainer.fit(): ...

    ``sampling``: how samples are drawn (its ``params()`` and generation batch size);
    ``evaluator``: what each evaluation measures (default: IS estimates on 256 samples of q and
    π), every ``eval_every`` steps and at the end, with ``save_samples`` of π's texts written to
    the run folder; ``contexts``: the contexts c of a conditional target, ``contexts_per_step``
    of them drawn per step (the evaluator holds the evaluation contexts); ``run``: the run folder
    (metrics, samples, checkpoints as ``checkpoints`` say); ``distributed``: this process's place
    among the processes of an ``accelerate launch`` (default: one process without a launcher).
    """

    def __init__(
        self,
        policy: LanguageModel,
        target: Target,
        objective: Objective,
        args: TrainArgs | None = None,
        *,
        sampling: SamplingArgs | None = None,
        evaluator: Evaluator | None = None,
        eval_every: int = 10,
        save_samples: int = 20,
        checkpoints: CheckpointArgs | None = None,
        contexts: list[str] | None = None,
        contexts_per_step: int = 8,
        run: RunFolder | None = None,
        distributed: Distributed | None = None,
    ) -> None:
        args = args if args is not None else TrainArgs()
        sampling = sampling if sampling is not None else SamplingArgs()
        self.dist = distributed or Distributed(args.sample_shards, args.mixed_precision)
        refuse_unworkable(policy, target, objective, args, sampling, self.dist)
        self.policy, self.target, self.objective = policy, target, objective
        on_policy = args.proposal.update == "on_policy"
        self.needs_hidden = objective.needs_hidden
        self.prior_pass = objective.prior_pass
        self.base = target.base
        self.args = args
        self.checkpoints = checkpoints if checkpoints is not None else CheckpointArgs()
        self.eval_every, self.save_samples = eval_every, save_samples
        self.sampling = sampling.params()
        self.sample_batch = sampling.batch_size
        self.run = run
        self.status: Status = quiet  # what the loop is doing now
        self.proposal: LanguageModel = policy if on_policy else self.base
        self.state = TrainState()
        self.buffer = SampleBuffer(args.buffer_satisfied_share) if args.sample_buffer else None
        best = None if run is None else run.path / "best.safetensors"
        self.best = BestPolicy(best) if args.keep_best else None
        self.clock = PhaseClock()  # where the time goes: time_<phase>_wall/_cpu in each record
        for model in (policy, self.base):
            model.module.to(self.dist.device)
        if self.args.gradient_checkpointing:
            enable_gradient_checkpointing(policy.module)
        self.params = [p for p in policy.module.parameters() if p.requires_grad]
        # the objective's own weights (a value head): outside the policy, so no wrapper syncs them
        self.own_params: list[torch.nn.Parameter] = objective.attach(policy)
        self.params += self.own_params
        optimizer, self.scheduler = make_optimizer(self.params, self.args)
        # accelerate wraps the policy's module (DDP, FSDP, DeepSpeed; itself on one process) and
        # the optimizer; forwards that train go through the wrapper (Distributed.training_forward)
        self.wrapper, self.optimizer = self.dist.accelerator.prepare(policy.module, optimizer)
        if self.dist.sharded:  # FSDP replaced the parameters by their shards (DTensors), which
            # the optimizer now holds; sampling needs them gathered (sharding.py)
            self.params = [p for group in self.optimizer.param_groups for p in group["params"]]
            sharding.gather(policy.module)
        self.vllm = VLLMSampler(policy) if sampling.backend == "vllm" else None
        self.reuse_sampling_pass = reuses_sampling_pass(
            args, sampling, self.sampling, objective, policy, self.dist.world
        )
        # FSDP and vLLM hold π's weights elsewhere than its parameters: no average there
        supported = not self.dist.sharded and self.vllm is None
        self.average = weight_average(policy.module, args.average_weights, supported=supported)
        seed = self.args.seed
        self.generator = torch.Generator().manual_seed(seed)
        self.eval_generator = torch.Generator().manual_seed(seed + 1)
        self.evaluator = evaluator or Evaluator(
            target, sampling=self.sampling, micro=args.micro, sample_batch=self.sample_batch
        )
        if self.evaluator.sampling != self.sampling:
            raise ValueError(
                f"the evaluator samples with {self.evaluator.sampling}, training with {self.sampling}: "
                "give both the same sampling settings (Evaluator(..., sampling=sampling.params()))"
            )
        self.draws = Draws(
            target,
            self.sampling,
            self.dist,
            sample_batch=self.sample_batch,
            contexts=contexts,
            per_step=contexts_per_step,
            eval_contexts=self.evaluator.eval_contexts,
            vllm=self.vllm,
        )
        self.evaluator.connect(  # through self.status: the session sets it after this
            lambda m, n, g: self.draw(m, n, g, evaluation=True),
            self.eval_generator,
            lambda *a: self.status(*a),
        )

    def describe_sharding(self) -> str | None:
        """How FSDP splits π's trainable weights (None without FSDP)."""
        return sharding.describe(self.params, self.dist.world) if self.dist.sharded else None

    # -- sampling and scoring ------------------------------------------------------------------
    def draw(
        self,
        model: LanguageModel,
        n: int,
        generator: torch.Generator,
        *,
        evaluation: bool = False,
        prior: PriorPass = "all",
        gradient: bool = False,
    ) -> Scored:
        """n samples from ``model`` scored under the target (`Draws`; with as much of the prior's
        pass as ``prior`` asks for, and with ``gradient`` the sampling pass's graph kept);
        evaluation draws spread over the evaluation contexts."""
        who = "a" if model is self.base else "q" if model is self.proposal else "π"
        self.status(f"sampling {n} from {who}")
        return self.draws(model, n, generator, evaluation=evaluation, prior=prior, differentiable=gradient)

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
        """The next n samples of the pool's training split (`draws.replay_batch`)."""
        self.evaluator.ensure_pool()  # drawn (or read from the cache) once
        draw, self.state.replay_position = replay_batch(
            self.evaluator.train_pool, n, self.state.replay_position, self.args.seed, self.args.replay_from
        )
        return draw

    def train_step(self) -> dict[str, float]:
        cfg = self.args
        clock = self.clock
        with clock("draw"):  # sampling from q and scoring (the prior's forward, the scorers)
            if cfg.replay_pool:
                draw = self._replay_batch(cfg.batch_size)
            else:
                draw = self.draw(  # with its graph: the pass is π's forward (training/sampling_pass.py)
                    self.proposal,
                    cfg.batch_size,
                    self.generator,
                    prior=self.prior_pass,
                    gradient=self.reuse_sampling_pass,
                )
        if draw.scored_prior:
            self._accumulate_z(draw)
        with clock("prepare"):
            if self.buffer is not None:  # the updates' rows, from every sample so far (training/buffer.py)
                self.buffer.add(draw)
                rows, weight = self.buffer.minibatches(cfg.updates, cfg.minibatch, self.generator)
                batch = self._batch(rows).with_extras(row_weight=weight)
            else:
                batch = self._batch(draw)
        losses, norms = [], []
        shuffle = self.buffer is None  # the buffer's minibatches come drawn at random already
        for _ in range(cfg.epochs if shuffle else 1):
            order = (
                torch.randperm(len(batch), generator=self.generator) if shuffle else torch.arange(len(batch))
            )
            for minibatch in order.split(cfg.minibatch):
                self.status(f"update {len(losses) + 1}/{cfg.updates}")
                self.optimizer.zero_grad(set_to_none=True)
                mine = self.dist.my_rows(minibatch)  # this process's share; gradients are averaged
                micros = mine.split(cfg.micro)
                total = 0.0
                for i, micro in enumerate(micros):
                    part = batch.select(micro)
                    rows = self.objective.rows_with_loss(part)
                    if rows is not None and rows.any():  # none has a loss: all run, a zero gradient
                        part = part.select(rows.nonzero().squeeze(1))
                    sync = i == len(micros) - 1
                    with (
                        clock("forward_backward"),
                        self.dist.training_forward(self.policy, self.wrapper, sync=sync),
                    ):
                        out = self.objective.view_policy(self.policy, part, hidden=self.needs_hidden)
                        per_row = weighted_rows(self.objective.per_sample_loss(part, out), part)
                        loss = per_row.sum() / len(mine)
                        if not torch.isfinite(loss):
                            step = self.state.step + 1
                            name = self.objective.name
                            raise NonFiniteLossError(non_finite_message(name, step, part, out.log_prob, loss))
                        self.dist.accelerator.backward(loss)
                    total += loss.item()
                with clock("optimizer"):
                    self.dist.average_gradients(self.own_params)
                    clip = cfg.max_grad_norm if cfg.max_grad_norm is not None else float("inf")
                    norm = self.dist.accelerator.clip_grad_norm_(self.params, clip)
                    norms.append(float("nan") if norm is None else float(norm))  # None: DeepSpeed clips
                    self.optimizer.step()
                    self.scheduler.step()
                    sharding.gather(self.policy.module)  # FSDP: the updated shards, gathered
                    self.objective.after_update()  # running statistics advance once per update
                losses.append(total)
        if self.vllm is not None:
            self.vllm.sync()  # the engine samples the next step with the updated weights
        if self.average is not None:
            self.average.update()
        self.state.step += 1
        self.state.samples_seen += len(draw)
        clock.steps += 1
        metrics = self.dist.mean({"loss": sum(losses) / len(losses)})  # each process: its share's mean
        metrics |= {"grad_norm": sum(norms) / len(norms), "lr": self.scheduler.get_last_lr()[0]}
        metrics |= self.objective.step_metrics()
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
        if self.objective.prepares_batches:
            self.status("preparing advantages")
            drawn_by_pi = self.policy is self.proposal and self.sampling.is_ancestral  # log q = log π
            out = frozen_policy_output(
                self.policy, batch.samples, hidden=self.needs_hidden, micro=self.args.micro, free=drawn_by_pi
            )
            batch = self.objective.prepare(batch, out)
        return batch

    def gradient_stats(self, n: int) -> GradientStats:
        """Per-sample gradient statistics of the objective on ``n`` fresh samples from q (drawn
        with the evaluation generator, so training's random stream is untouched)."""
        draw = self.draw(self.proposal, n, self.eval_generator, prior=self.prior_pass)
        return gradient_variance(self.policy, self.objective, self._batch(draw), hidden=self.needs_hidden)

    def check_proposal(self) -> dict[str, float]:
        """KL-adaptive proposal: on fresh samples from q, replace q by π if π is closer to p."""
        cfg = self.args.proposal
        draw = self.draw(self.proposal, cfg.samples, self.generator)
        self._accumulate_z(draw)
        self.state.samples_seen += len(draw.samples)
        pi_score, q_score = distances_to_target(draw, self._policy_log_prob(draw), cfg.criterion)
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
        metrics, pi_draw = self.evaluator.measure(self.policy, self.proposal)
        if self.run is not None and self.save_samples:
            self.run.write_samples(self.state.step, pi_draw.text_rows(self.save_samples, "log_pi"))
        return metrics

    # -- the loop ------------------------------------------------------------------------------
    def restore_best(self) -> dict | None:
        """training.keep_best: put the best evaluated weights back into π; returns what was
        chosen ({"step", "pool_kl_p_pi"}), or None when nothing is kept."""
        return None if self.best is None else self.best.restore(self.state, self.policy)

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
            steps_timed = self.clock.take()  # per step, since the last record
            averaged = self.average.swapped_in() if self.average is not None else contextlib.nullcontext()
            with averaged:  # evaluations and keep_best see θ̄ (training/averaging.py)
                with self.clock("evaluate"):
                    evaluation = self.evaluate()
                if self.best is not None:
                    self.best.offer(self.state, evaluation, self.policy, write=self.dist.is_main)
            rec = {
                "step": self.state.step,
                "samples_seen": self.state.samples_seen,
                "proposal_updates": self.state.proposal_updates,
                "processes": self.dist.world,
                "running_log_z": self.state.log_z,
                **train,
                **self.state.last_check,
                **evaluation,
                **steps_timed,
                **self.clock.take(),  # this evaluation's own seconds
                "seconds": time.perf_counter() - started,
            }
            records.append(rec)
            if self.run is not None:
                self.run.log_metrics(rec)
            if on_record is not None:
                on_record(rec)

        steps, proposal = self.args.steps, self.args.proposal
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
                    with self.clock("proposal_check"):
                        self.state.last_check = self.check_proposal()
                if step % self.eval_every == 0 or step == steps:
                    record(train)
                at_checkpoint = step % self.checkpoints.every == 0 or step == steps
                # under FSDP every process gathers the weights and optimizer state; main writes
                if self.run is not None and (self.dist.is_main or self.dist.sharded) and at_checkpoint:
                    self._save_checkpoint(self.run.checkpoint_dir(step))
        if self.average is not None:
            self.average.copy_to_params()  # π is θ̄ from here on (final/)
        return records

    def _stop(self, signum: int) -> TrainingInterrupted:
        """Checkpoint the step just finished (unless it already is, or nothing was trained: a
        resume then starts over), to stop on a signal without losing the steps since the last."""
        step, folder = self.state.step, None
        if self.run is not None and step > 0:
            folder = self.run.checkpoint_dir(step)
            if self.dist.is_main and not folder.is_dir():
                self._save_checkpoint(folder)
        return TrainingInterrupted(signum, step, folder)
