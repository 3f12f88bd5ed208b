"""Full weights of a model that FSDP2 (``torch.distributed.fsdp.fully_shard``, which accelerate
applies in place) holds in shards: reading them, writing them, and a plain copy of the model.

Under FSDP2 each process stores its shard of every parameter (a DTensor). A forward first
all-gathers the full parameters ("unshards"), a collective that every process must join. The
sampling loop calls the policy token by token, and processes draw different numbers of tokens,
so no collective may happen while sampling. Hence the invariant the trainer keeps: outside an
update the parameters are gathered (`gather`, after ``prepare`` and after every optimizer step;
``fsdp_reshard_after_forward: false`` keeps them gathered through forwards). A forward then
needs no collective, and the parameters the module shows are the full ones.

Everything here is collective under FSDP: every process must call it, in the same order.
Without FSDP each function is the plain operation, and no process waits for another.
"""

from __future__ import annotations

import torch
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor, distribute_tensor


def units(module: torch.nn.Module) -> list[FSDPModule]:
    """The FSDP units (modules ``fully_shard`` was applied to) in ``module``; [] without FSDP."""
    return [m for m in module.modules() if isinstance(m, FSDPModule)]


def is_sharded(module: torch.nn.Module) -> bool:
    return isinstance(module, FSDPModule)


def gather(module: torch.nn.Module) -> None:
    """All-gather every unit's full parameters, and keep them until the next backward (which
    reshards them; the optimizer then updates the shards). A no-op where already gathered."""
    for unit in units(module):
        unit.unshard()


def is_shard(tensor: torch.Tensor) -> bool:
    """A process's shard of a sharded tensor (FSDP's parameters, their gradients and moments)."""
    return isinstance(tensor, DTensor)


def full(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor's full value (collective), any other tensor as it is."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def like(value: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``value`` (a full tensor) laid out as ``reference``: this process's shard of it when
    ``reference`` is a DTensor (cut locally, as FSDP cuts: every process holds the full value)."""
    value = value.to(device=reference.device, dtype=reference.dtype)
    if not isinstance(reference, DTensor):
        return value
    shard = distribute_tensor(value, reference.device_mesh, reference.placements, src_data_rank=None)
    if shard.to_local().shape != reference.to_local().shape:
        raise RuntimeError(f"a shard of {tuple(value.shape)} does not match FSDP's own shard")
    return shard


def full_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` with full tensors, detached on the CPU (FULL_STATE_DICT). Under
    FSDP ``state_dict()`` swaps the shards back in, so the parameters are gathered again after."""
    state = {name: full(t).detach().cpu().clone() for name, t in module.state_dict().items()}
    gather(module)
    return state


def load_full_state(module: torch.nn.Module, values: dict[str, torch.Tensor]) -> None:
    """Copy full values into the parameters named in ``values`` (into each process's shards
    under FSDP, whose gathered copies are then refreshed)."""
    for unit in units(module):
        unit.reshard()  # the module shows its sharded parameters, which the optimizer updates
    params = dict(module.named_parameters())
    with torch.no_grad():
        for name, value in values.items():
            params[name].copy_(like(value, params[name]))
    gather(module)


def plain_copy(module: torch.nn.Module) -> torch.nn.Module:
    """An unsharded copy of an FSDP-sharded transformers model (FSDP forbids ``deepcopy``): the
    model's own class, built from its config, holding the full weights."""
    base = type(module).__bases__
    if len(base) != 2 or base[0] is not FSDPModule or not hasattr(module, "config"):
        raise TypeError(
            f"{type(module).__name__}: under FSDP only full fine-tuning of a transformers model is "
            "supported (no LoRA)"
        )
    state = full_state_dict(module)
    reference = next(module.parameters())
    with torch.random.fork_rng(devices=[]):  # the copy's throwaway initialisation draws no shared seed
        copy = base[1](module.config)
    copy = copy.to(device=reference.device, dtype=reference.dtype).eval()
    copy.load_state_dict(state)
    if hasattr(copy, "tie_weights"):
        copy.tie_weights()
    return copy


def describe(params: list[torch.Tensor], world: int) -> str:
    """How ``params`` (the optimizer's: shards under FSDP) are split over ``world`` processes,
    read off the shards this process holds."""
    shards = [p for p in params if is_shard(p)]
    mine = sum(p.to_local().numel() for p in shards)
    total = sum(p.numel() for p in shards)
    return (
        f"FSDP: π's trainable weights are sharded over {world} processes, "
        f"{len(shards)} of {len(params)} tensors; the main process holds {mine:,} of "
        f"{total:,} values"
    )
