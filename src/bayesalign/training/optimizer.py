"""The optimizer and its learning-rate schedule, as ``training`` says."""

from __future__ import annotations

import torch

from bayesalign.training.args import TrainArgs


def make_optimizer(
    params: list[torch.nn.Parameter], args: TrainArgs
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """Adam or AdamW on ``params`` with a linear warm-up over ``args.warmup_steps`` updates, the
    first update already at lr/warmup (not 0: an update at lr 0 would only fill Adam's moments)."""
    opt = torch.optim.AdamW if args.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt(params, lr=args.lr, weight_decay=args.weight_decay, eps=args.adam_eps)
    warmup = args.warmup_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda update: min(1.0, (update + 1) / warmup) if warmup else 1.0
    )
    return optimizer, scheduler
