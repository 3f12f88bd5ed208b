"""The training loop: sample from q → score → weights → loss → step, plus Z and proposal
bookkeeping, evaluation, checkpoints and the run folder. No algorithm math lives here."""

from bayesalign.training.run import RunFolder
from bayesalign.training.trainer import NonFiniteLossError, Trainer, proposal_should_update

__all__ = ["NonFiniteLossError", "RunFolder", "Trainer", "proposal_should_update"]
