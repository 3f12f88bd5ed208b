"""The training loop: sample from q → score → weights → loss → step, plus Z and proposal
bookkeeping, evaluation and checkpoints. No algorithm math lives here, and no config: the loop
takes objects (`Trainer`, `TrainArgs`)."""

from bayesalign.training.adaptive import NonFiniteLossError, proposal_should_update
from bayesalign.training.args import CheckpointArgs, ProposalArgs, SamplingArgs, TrainArgs
from bayesalign.training.setup_checks import UnworkableRunError
from bayesalign.training.trainer import Trainer

__all__ = [
    "CheckpointArgs",
    "NonFiniteLossError",
    "ProposalArgs",
    "SamplingArgs",
    "TrainArgs",
    "Trainer",
    "UnworkableRunError",
    "proposal_should_update",
]
