"""``training.scorer_tilt``: the stage after a run's steps that tilts π by the constraint's own
scorer (scorer_tilt.py), fits the tilt on the posterior pool's training split (tilt_fit.py),
evaluates the tilted π like any step, and says whether final/ should hold it: only if its
held-out KL(p‖π) is lower than that of the π it tilts (the kept step's, with keep_best).

The fit counts as one more step: its record (``stage: scorer_tilt``) and its samples carry
step = the last step + 1, so the run folder, the summary and the report read it like any other."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from bayesalign.models import LanguageModel
from bayesalign.runs.metric_names import POOL_KL_P_PI
from bayesalign.scorer_tilt import ScorerTilt, tilted
from bayesalign.tilt_fit import TiltFit
from bayesalign.training.trainer import Trainer

if TYPE_CHECKING:
    from bayesalign.config.scorer_tilt import ScorerTiltSection

STAGE = "scorer_tilt"


def tilt_stage(trainer: Trainer, section: ScorerTiltSection) -> tuple[LanguageModel, dict]:
    """The tilted π (over the trainer's π as it is now) and its evaluation record."""
    if trainer.dist.world > 1:
        raise ValueError("training.scorer_tilt runs on one process: launch without accelerate")
    started = time.perf_counter()
    evaluator, policy, status = trainer.evaluator, trainer.policy, trainer.status
    evaluator.ensure_pool()
    p_samples = evaluator.train_pool.p_samples()
    (constraint,) = trainer.target.constraints
    vocab = policy.module.get_output_embeddings().weight.shape[0]
    tilt = ScorerTilt(
        constraint.scorer,
        policy.tokenizer,
        vocab,
        horizon=trainer.sampling.max_new_tokens,
        top=section.top,
        edges=tuple(section.edges),
        workers=section.workers,
        final=section.final,
    )
    # the last step's constant log π is not needed to fit (nor reported): it would cost the scorer
    # on every likely last token of every training sample
    fit = TiltFit(tilt, policy, p_samples, batch_size=16, status=status, last_step=False)
    mean_log_pi = fit.fit(l2=section.l2, iters=section.iters, status=status)
    model = tilted(policy, tilt)
    fitted = time.perf_counter() - started
    metrics, pi_draw = evaluator.measure(model, trainer.proposal)
    step = trainer.state.step + 1
    if trainer.run is not None and trainer.save_samples:
        trainer.run.write_samples(step, pi_draw.text_rows(trainer.save_samples, "log_pi"))
    record = {
        "step": step,
        "stage": STAGE,
        "samples_seen": trainer.state.samples_seen,
        "tilt_fit_samples": len(p_samples),
        "tilt_fit_mean_log_pi": mean_log_pi,  # without the last position where it is p's own step
        "tilt_fit_seconds": fitted,
        **metrics,
        "seconds": time.perf_counter() - started,
    }
    if trainer.run is not None:
        trainer.run.log_metrics(record)
    return model, record


def keep_tilt(record: dict, untilted_kl: float | None) -> bool:
    """Whether final/ holds the tilted π: its held-out KL(p‖π) is lower than the untilted one's."""
    tilted_kl = record.get(POOL_KL_P_PI)
    return tilted_kl is not None and (untilted_kl is None or tilted_kl < untilted_kl)
