"""What a `Trainer` refuses before any work, each with the reason and the setting to change:
an objective that cannot train on this target or proposal, objectives whose running statistics
would differ between processes, FSDP with what it cannot shard, batch sizes that do not split
over the processes, and a policy with nothing to train."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from bayesalign.models import LanguageModel
from bayesalign.objectives import Objective
from bayesalign.targets import Target
from bayesalign.training.args import SamplingArgs, TrainArgs
from bayesalign.training.distributed import Distributed


class UnworkableRunError(ValueError):
    """A run whose settings cannot work together (the CLI prints it as one ``error:`` line)."""


def _named(check: Callable[..., None]) -> Callable[..., None]:
    """Plain ValueErrors of ``check`` (its own, the objective's, the process layout's: all the
    user's to fix) become `UnworkableRunError`; named errors (InfiniteDivergenceError, ...) pass."""

    @functools.wraps(check)
    def checked(*args: Any, **kwargs: Any) -> None:
        try:
            check(*args, **kwargs)
        except ValueError as err:
            if type(err) is not ValueError:
                raise
            raise UnworkableRunError(str(err)) from err

    return checked


@_named
def refuse_unworkable(
    policy: LanguageModel,
    target: Target,
    objective: Objective,
    args: TrainArgs,
    sampling: SamplingArgs,
    dist: Distributed,
) -> None:
    """Raise TypeError for what is not an Objective, and `UnworkableRunError` (one line naming the
    setting) if this run cannot work; both before any sample is drawn."""
    if not isinstance(objective, Objective):
        raise TypeError(f"{objective!r} is not an Objective (bayesalign.objectives.Objective)")
    objective.check_target(target)  # an objective that cannot work with this target says so now
    if objective.requires_on_policy and args.proposal.update != "on_policy":
        raise ValueError(
            f"{objective.name} trains on samples from the policy itself; set "
            f"training.proposal.update: on_policy (it is {args.proposal.update!r})"
        )
    if objective.requires_prior_proposal and args.proposal.update != "fixed":
        raise ValueError(
            f"{objective.name} fits on samples of the prior a; set training.proposal.update: fixed "
            f"(it is {args.proposal.update!r})"
        )
    if objective.requires_prior_proposal and args.replay_pool and args.replay_from != "prior":
        raise ValueError(
            f"{objective.name} fits on samples of the prior a, and replay_from: posterior replays "
            "only the accepted ones; set training.replay_from: prior"
        )
    if args.sample_buffer and (objective.prepares_batches or objective.requires_on_policy):
        raise ValueError(
            f"{objective.name} prepares each step's batch with the policy of that step (advantages, "
            "values) or needs on-policy samples; training.sample_buffer replays older samples: drop it"
        )
    if args.buffer_satisfied_share is not None and not target.constraints:
        raise ValueError("training.buffer_satisfied_share stratifies by constraints: this target has none")
    if args.sample_buffer and dist.world > 1:
        raise ValueError("training.sample_buffer keeps one process's samples: train on one process")
    dist.check_batches(args.minibatch, args.micro)
    if dist.world > 1 and objective.views_policy_itself:
        raise ValueError(
            f"{objective.name} computes its own forward of the policy, which no process wrapper "
            "(DDP, FSDP) sees; train it on one process"
        )
    if dist.world > 1 and objective.keeps_running_statistics:
        raise ValueError(
            f"{objective.name} updates running statistics from the samples each process trains "
            "on, which differ between processes; train it on one process"
        )
    if dist.sharded and (policy.has_adapters or sampling.backend == "vllm"):
        raise ValueError(
            "under FSDP only full fine-tuning with the hf sampling backend is supported "
            "(no LoRA, no vLLM): launch with DDP (configs/accelerate/ddp.yaml) instead"
        )
    if not any(p.requires_grad for p in policy.module.parameters()):
        raise ValueError("the policy has no trainable parameters")
