"""When an on-policy step can take π's gradient through its own sampling pass.

Sampling x ~ π with the KV cache already computes log π(x_t | x_<t) for every token, with the
same weights the step's one update starts from. Kept with its autograd graph, that pass *is*
the policy's forward pass: the loss back-propagates through it, and the separate forward over
the same tokens (a third of a training pass's work) is not run. The gradient is the same up
to float rounding (tests/test_sampling_pass.py). It holds when:

- the samples come from π itself, ancestrally (log q = log π: no temperature, top-k, top-p),
  through the Hugging Face loop on one process (vLLM's pass has no graph; under DDP/FSDP the
  gradient must flow through the wrapper's own forward);
- the step makes exactly one update on its draw (one epoch, one minibatch, no micro-batches, no
  sample buffer):
  after an update the graph describes weights that no longer exist, and micro-batches mean the
  user wants the activations of part of the batch in memory at a time;
- the objective reads log π only (no value head's hidden states) and trains on every row: an
  objective that keeps only some rows (DPG's rows with P(x) > 0) runs π's pass on those rows
  alone, which costs less than a backward through the whole sampling pass unless nearly every
  row is kept;
- no gradient checkpointing or mixed precision, which change how the training forward runs;
- a decoder-only model (the encoder-decoder path is not covered by the equality test).

Whether it is faster depends on the machine (docs/results/benchmarks.md): on one 2-vCPU machine
it took 5–18% off the step, on another it added 5–14% (the backward through the decoding steps
allocates a tensor per step and layer, and there fresh memory was expensive).
"""

from __future__ import annotations

from bayesalign.models import LanguageModel
from bayesalign.objectives import Objective
from bayesalign.samples import SamplingParams
from bayesalign.training.args import SamplingArgs, TrainArgs


def reuses_sampling_pass(
    args: TrainArgs,
    sampling: SamplingArgs,
    params: SamplingParams,
    objective: Objective,
    policy: LanguageModel,
    processes: int,
) -> bool:
    """Whether this run's training steps take π's gradient through the sampling pass."""
    one_update = args.epochs == 1 and args.micro == args.batch_size
    keeps_every_row = type(objective).rows_with_loss is Objective.rows_with_loss
    return (
        args.reuse_sampling_pass
        and args.proposal.update == "on_policy"
        and not args.replay_pool
        and not args.sample_buffer
        and one_update
        and processes == 1
        and sampling.backend == "hf"
        and params.is_ancestral
        and not objective.needs_hidden
        and keeps_every_row
        and not args.gradient_checkpointing
        and args.mixed_precision == "no"
        and not policy.is_seq2seq
    )
