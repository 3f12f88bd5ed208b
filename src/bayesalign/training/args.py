"""What the training loop is told: plain, validated argument objects with defaults and help text.

`TrainArgs` is the YAML ``training:`` section itself (config/ adds the method's name and
options on top), `SamplingArgs` the ``sampling:`` section and `CheckpointArgs` the
``checkpoint:`` section, so a Python user and a config file set the same fields with the same
checks::

    Trainer(policy, target, GDCPlusPlus(), TrainArgs(steps=30, batch_size=64, lr=3e-4))
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from bayesalign.arguments import Args
from bayesalign.samples import SamplingParams


class ProposalArgs(Args):
    update: Literal["adaptive", "fixed", "on_policy"] = "adaptive"
    every: int = Field(10, gt=0, description="steps between KL-adaptive checks")
    criterion: Literal["kl", "tv"] = "kl"
    samples: int = Field(256, gt=1, description="fresh samples from q per check")


class TrainArgs(Args):
    steps: int = Field(100, ge=0)
    batch_size: int = Field(256, gt=0, description="samples drawn from q per step")
    minibatch_size: int | None = Field(
        None,
        gt=0,
        description="samples per optimizer update; divides batch_size, except with sample_buffer "
        "(its minibatches are drawn from every sample so far)",
    )
    micro_batch_size: int | None = Field(None, gt=0, description="samples per forward/backward")
    epochs: int = Field(1, gt=0, description="passes over each step's samples")
    optimizer: Literal["adam", "adamw"] = "adamw"
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    adam_eps: float = Field(
        1e-8,
        gt=0,
        description="Adam's ε in θ −= lr·m/(√v + ε): weights whose gradients stay below ≈ ε move by less "
        "than lr per update, instead of lr times the sign of their noise",
    )
    warmup_steps: int = Field(0, ge=0, description="optimizer updates of linear warm-up")
    max_grad_norm: float | None = Field(1.0, gt=0)
    seed: int = 0
    threads: int | None = Field(None, gt=0)
    sample_shards: int | None = Field(
        None,
        gt=0,
        description="independently seeded pieces of every draw (default: the number of processes); "
        "a run gives the same result on any number of processes that divides it",
    )
    mixed_precision: Literal["no", "bf16"] = Field("no", description="bf16: autocast the policy (CUDA only)")
    gradient_checkpointing: bool = Field(False, description="recompute the policy's activations in backward")
    reuse_sampling_pass: bool = Field(
        True,
        description="on-policy steps with one update back-propagate through the sampling pass "
        "instead of running π again on its samples, where that gives the same gradient "
        "(training/sampling_pass.py); false: always a separate forward (which is faster depends on the "
        "machine: docs/results/benchmarks.md)",
    )
    proposal: ProposalArgs = ProposalArgs()
    replay_pool: bool = Field(
        False,
        description="train on the posterior pool's training split in passes, instead of drawing "
        "fresh samples every step: every sample drawn is reused (replay_from says which)",
    )
    replay_from: Literal["posterior", "prior"] = Field(
        "posterior",
        description="posterior: the split's accepted samples as draws of p (q = p; DPG is then "
        "maximum likelihood on them, which over-fits them in passes); prior: every prior sample "
        "of the split, q = a (GDC++'s π/a term then holds π down to p on the pool's samples, "
        "rejected ones included)",
    )
    sample_buffer: bool = Field(
        False,
        description="keep every sample drawn (with its own log q) and make each step's updates on "
        "minibatches drawn from all of them, not only the step's new ones (training/buffer.py)",
    )
    updates_per_step: int | None = Field(
        None,
        gt=0,
        description="with sample_buffer: optimizer updates per step, each on minibatch_size rows "
        "drawn from the buffer (default 1)",
    )
    buffer_satisfied_share: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="with sample_buffer: draw this share of each minibatch from the satisfied "
        "samples, the rest from the others, each row weighted so the loss stays unbiased (for rare "
        "constraints; training/buffer.py)",
    )
    average_weights: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="keep θ̄ ← d·θ̄ + (1 − d)·θ of π's weights after every step, with this decay d "
        "(e.g. 0.95); evaluations, keep_best and final/ use θ̄ (training/averaging.py)",
    )
    keep_best: bool = Field(
        False,
        description="final/ holds the evaluated policy with the lowest pool KL(p‖π) on the validation "
        "split (the prior included), not the last one",
    )

    @model_validator(mode="after")
    def _batch_sizes(self) -> TrainArgs:
        # a buffer's minibatches are drawn from every sample so far, not cut from the step's draw
        if not self.sample_buffer and (self.minibatch > self.batch_size or self.batch_size % self.minibatch):
            raise ValueError(f"minibatch_size {self.minibatch} must divide batch_size {self.batch_size}")
        if self.micro > self.minibatch or self.minibatch % self.micro:
            raise ValueError(f"micro_batch_size {self.micro} must divide minibatch_size {self.minibatch}")
        if self.updates_per_step is not None and not self.sample_buffer:
            raise ValueError(
                "updates_per_step counts the updates on minibatches of the sample buffer: set "
                "sample_buffer: true (without it a step makes epochs × batch_size / minibatch_size updates)"
            )
        if self.buffer_satisfied_share is not None and not self.sample_buffer:
            raise ValueError("buffer_satisfied_share stratifies the buffer's rows: set sample_buffer: true")
        if self.sample_buffer and (self.epochs != 1 or self.replay_pool):
            raise ValueError(
                "sample_buffer draws each update's rows from every sample so far: epochs must be 1 "
                "(set updates_per_step instead), and it does not combine with replay_pool"
            )
        return self

    @property
    def updates(self) -> int:
        """Optimizer updates per step."""
        if self.sample_buffer:
            return self.updates_per_step or 1
        return self.epochs * (self.batch_size // self.minibatch)

    @property
    def minibatch(self) -> int:
        return self.minibatch_size or self.batch_size

    @property
    def micro(self) -> int:
        return self.micro_batch_size or self.minibatch


class SamplingArgs(Args):
    max_new_tokens: int = Field(20, gt=0)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0)
    batch_size: int | None = Field(None, gt=0, description="sequences generated per forward pass")
    backend: Literal["hf", "vllm"] = Field(
        "hf", description="vllm: π's samples from a vLLM engine on the GPU (extra 'vllm'; untested)"
    )

    def params(self) -> SamplingParams:
        return SamplingParams(self.max_new_tokens, self.temperature, self.top_p, self.top_k)


class CheckpointArgs(Args):
    every: int = Field(50, gt=0)
    keep: int = Field(2, gt=0)
    merge_lora: bool = Field(True, description="final/ holds merged weights (else the adapter only)")
    final_dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32",
        description="dtype of final/'s weights: bfloat16 or float16 halve its disk (training and the "
        "resumable checkpoints stay in the model's own dtype)",
    )
    loadable: bool = Field(
        True,
        description="each checkpoint is also a Hugging Face folder that from_pretrained loads: the LoRA "
        "adapter, or the full weights (then twice the disk of the resumable state alone)",
    )
