"""One training loop on one process or many, through accelerate: DDP or FSDP2 with gloo on CPU
(both tested here, FSDP2 through configs/accelerate/fsdp_cpu.yaml); on GPUs the DDP, FSDP and
DeepSpeed configs in configs/accelerate/ are untested.

Why a multi-process step equals the one-process step on the same global batch:

- Sampling is sharded. A draw of n samples is cut into ``shards`` pieces; piece s is drawn with a
  generator seeded from (a seed the draw takes from the trainer's replicated generator, s). A
  piece's samples therefore do not depend on which process draws it: one process drawing every
  piece and W processes drawing shards/W pieces each produce the same samples. With one shard
  the trainer's generator draws the samples itself, as it did before sharding existed.
- The pieces are gathered, in shard order, so every process holds the whole draw. Z (a
  log-sum-exp over every log-weight, in log space), the objective's batch statistics (``prepare``)
  and the evaluation metrics are then computed on the global batch, never averaged from
  per-process estimates, which for a ratio estimator like Z would be biased.
- Gradients: each process takes its equal slice of every minibatch and averages its loss over
  that slice; DDP averages gradients over processes (FSDP reduce-scatters their average onto
  the shards), which is the mean over the whole minibatch.
- Under FSDP every process holds a shard of each weight; between updates the full weights stay
  gathered, so that sampling needs no collective (bayesalign/sharding.py).
- The generators that choose contexts and minibatch order are replicated: every process advances
  them identically, so the processes agree without talking.

Sampling, log a, scoring and the loss's forward/backward are split over processes; log π on the
whole batch (off-policy ``prepare`` hooks, evaluation) is computed by every process.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, broadcast_object_list, gather_object, parse_flag_from_env

from bayesalign.proposals import Scored

if TYPE_CHECKING:
    from bayesalign.models import LanguageModel

T = TypeVar("T")
MIXED_PRECISION = ("no", "bf16")


def check_mixed_precision(mode: str, device: torch.device) -> None:
    """bf16 autocast only where it pays: on this kind of CPU (no AVX-512 BF16) bf16 compute was
    measured ~30x slower than float32 (shared/reference/offline-resources.md), so a bf16 run on
    CPU is refused rather than silently crawling."""
    if mode not in MIXED_PRECISION:
        raise ValueError(f"training.mixed_precision {mode!r} is not one of {', '.join(MIXED_PRECISION)}")
    if mode == "bf16" and device.type != "cuda":
        raise ValueError(
            f"training.mixed_precision: bf16 needs a CUDA GPU, and this process runs on {device.type}: "
            "bf16 compute on a CPU without bf16 units is ~30x slower than float32. "
            "Set training.mixed_precision: no"
        )


def enable_gradient_checkpointing(module: torch.nn.Module) -> None:
    """Recompute each transformer layer's activations in the backward pass instead of storing them.

    transformers checkpoints a layer only while that layer is in training mode, and bayesalign
    keeps models in eval mode (dropout would make log π differ from the distribution that drew
    the samples). So the checkpointed layers alone are flagged as training, without ``.train()``
    on their children: their dropout stays off and the gradient is unchanged.
    """
    if not getattr(module, "supports_gradient_checkpointing", False):
        raise ValueError(f"training.gradient_checkpointing: {type(module).__name__} does not support it")
    options = {"use_reentrant": False}
    if hasattr(module, "activation_checkpointing_enable"):  # transformers >= 5.x
        module.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
    else:
        module.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)
    layers = [m for m in module.modules() if getattr(m, "gradient_checkpointing", False) is True]
    if not layers:
        raise ValueError(
            f"training.gradient_checkpointing: {type(module).__name__} has no layer to checkpoint"
        )
    for layer in layers:
        layer.training = True


def shard_sizes(n: int, shards: int) -> list[int]:
    """How many of n samples each shard draws (the first n % shards draw one more)."""
    return [n // shards + (i < n % shards) for i in range(shards)]


def shard_generator(seed: int, shard: int) -> torch.Generator:
    """The generator of one shard of one draw. numpy's SeedSequence mixes (seed, shard), so the
    streams of neighbouring shards and seeds are unrelated."""
    high, low = np.random.SeedSequence([seed, shard]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed((int(high) << 32) | int(low))


class Distributed:
    """This process's place in a run of ``world`` processes (1 without ``accelerate launch``),
    and the few collective operations the training loop needs."""

    def __init__(self, shards: int | None = None, mixed_precision: str = "no") -> None:
        # Without a GPU, accelerate joins processes launched by torchrun (`accelerate launch
        # --multi_gpu`) into a gloo group only when told cpu=True; left False, each would believe
        # it runs alone, and all of them would write the same run folder.
        cpu = not torch.cuda.is_available() or parse_flag_from_env("ACCELERATE_USE_CPU")
        check_mixed_precision(mixed_precision, torch.device("cpu" if cpu else "cuda"))  # before any work
        # Passed explicitly, so the bayesalign config, not the accelerate config, decides it.
        self.accelerator = Accelerator(cpu=cpu, mixed_precision=mixed_precision)
        self.world = self.accelerator.num_processes
        if cpu and self.world > 1 and parse_flag_from_env("ACCELERATE_USE_FSDP"):
            self._fsdp_on_cpu()
        self.rank = self.accelerator.process_index
        launched = int(os.environ.get("WORLD_SIZE", "1"))
        if launched != self.world:
            raise RuntimeError(
                f"launched as {launched} processes, but accelerate set up {self.world}; on CPU, launch "
                "with `accelerate launch --multi_gpu --num_processes N` or `torchrun --nproc_per_node N`"
            )
        self.shards = shards or self.world
        if self.shards % self.world:
            raise ValueError(
                f"training.sample_shards {self.shards} must be a multiple of the number of processes "
                f"({self.world}), so that every process draws the same number of shards"
            )

    def _fsdp_on_cpu(self) -> None:
        """Honour an FSDP launch config on CPU processes (configs/accelerate/fsdp_cpu.yaml).

        accelerate 1.15 switches to FSDP only on accelerator devices: AcceleratorState moves to
        DistributedType.FSDP inside ``elif self.distributed_type in [MULTI_GPU, ..., MULTI_NEURON]``
        (accelerate/state.py), a list without MULTI_CPU. On CPU it would quietly train with DDP
        despite the config. torch's FSDP2 runs on a CPU device mesh over gloo, so the state is
        moved to FSDP here, exactly as accelerate moves it on GPUs (the AcceleratorState and the
        PartialState, with the plugin it builds from the FSDP_* variables the launcher set); its
        own FSDP2 ``prepare`` then shards the model."""
        from accelerate.state import PartialState
        from accelerate.utils import FullyShardedDataParallelPlugin

        plugin = FullyShardedDataParallelPlugin()
        if plugin.fsdp_version != 2:
            raise ValueError("FSDP on CPU processes needs fsdp_version: 2 (FSDP2, fully_shard)")
        state = self.accelerator.state
        state.fsdp_plugin = plugin
        state.distributed_type = DistributedType.FSDP
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP

    @property
    def sharded(self) -> bool:
        """The policy is sharded by FSDP: its weights are read and written by every process
        together (bayesalign/sharding.py)."""
        return self.accelerator.distributed_type == DistributedType.FSDP

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    # -- setup -----------------------------------------------------------------------------------
    def main_first(self, work: Callable[[], T]) -> T | None:
        """Run ``work`` on the main process while the others wait (creating the run folder,
        fitting the target). An exception there is raised on every process, so none waits forever."""
        result, error = None, None
        if self.is_main:
            try:
                result = work()
            except Exception as err:  # re-raised below, after the others have been told
                error = err
        if self.world > 1:
            error = broadcast_object_list([error])[0]
        if error is not None:
            raise error
        return result

    def check_batches(self, minibatch: int, micro: int) -> None:
        """Each process trains on an equal share of every minibatch. Under DeepSpeed that share is
        one micro-batch: accelerate steps DeepSpeed's optimizer at every backward."""
        if minibatch % self.world:
            raise ValueError(
                f"training.minibatch_size {minibatch} must be a multiple of the number of processes "
                f"({self.world}): each process trains on an equal part of every minibatch"
            )
        share = minibatch // self.world
        if (plugin := self.accelerator.state.deepspeed_plugin) is not None:
            if micro < share:
                raise ValueError(
                    f"under DeepSpeed each process trains on its share of a minibatch ({share}) in one "
                    f"micro-batch: set training.micro_batch_size to {share} (it is {micro})"
                )
            plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = share

    # -- sampling --------------------------------------------------------------------------------
    def draw(
        self, n: int, generator: torch.Generator, draw_rows: Callable[[slice, torch.Generator], Scored]
    ) -> Scored:
        """The n samples of one draw, on every process, in shard order. This process draws its
        own shards with ``draw_rows(rows, shard_generator)`` (rows: which of the n it draws);
        the shards' seeds come from ``generator``, which every process advances alike."""
        if self.shards == 1:
            return draw_rows(slice(0, n), generator)
        seed = int(torch.randint(2**62, (1,), generator=generator))
        sizes = shard_sizes(n, self.shards)
        starts = np.cumsum([0, *sizes]).tolist()
        per_process = self.shards // self.world
        mine = range(self.rank * per_process, (self.rank + 1) * per_process)
        parts = [
            draw_rows(slice(starts[s], starts[s + 1]), shard_generator(seed, s)) for s in mine if sizes[s]
        ]
        if self.world > 1:
            parts = gather_object(parts)  # rank order is shard order
        return Scored.concat(parts)

    # -- training --------------------------------------------------------------------------------
    def my_rows(self, minibatch: torch.Tensor) -> torch.Tensor:
        """This process's slice of a minibatch's row indices."""
        return minibatch.tensor_split(self.world)[self.rank]

    @contextlib.contextmanager
    def training_forward(
        self, policy: LanguageModel, wrapper: torch.nn.Module, *, sync: bool
    ) -> Iterator[None]:
        """Differentiable forwards of ``policy`` go through ``wrapper`` (DDP, FSDP, DeepSpeed)
        inside this block, so that its gradient bookkeeping runs; gradients are averaged over
        processes at the backward of a ``sync`` block only (the last micro-batch of an update)."""
        policy.wrapper = None if wrapper is policy.module else wrapper
        scope = contextlib.nullcontext() if sync else self.accelerator.no_sync(wrapper)
        try:
            with scope:
                yield
        finally:
            policy.wrapper = None

    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Average gradients of parameters no wrapper manages (an objective's value head)."""
        if self.world == 1:
            return
        for p in params:
            if p.grad is not None:
                p.grad.copy_(self.accelerator.reduce(p.grad, reduction="mean"))

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Per-process numbers (each a mean over an equal share) averaged over processes."""
        if self.world == 1 or not values:
            return values
        stacked = torch.tensor(list(values.values()), dtype=torch.float64, device=self.device)
        return dict(zip(values, self.accelerator.reduce(stacked, reduction="mean").tolist(), strict=True))

    def close(self) -> None:
        """Wait for every process, then take the process group down (multi-process runs only)."""
        if self.world > 1:
            self.accelerator.wait_for_everyone()
            self.accelerator.end_training()
