"""Where names become objects: the models, the target (fitting λ), the objective, the evaluator
and the trainer that a validated config describes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from bayesalign.builtin_models import resolve_model_name
from bayesalign.config.base import ConfigError
from bayesalign.config.loading import callable_specs
from bayesalign.config.methods import METHODS, TwistSection
from bayesalign.config.sections import Config, ContextsSection, ModelSection, SamplingSection, TrainingSection
from bayesalign.config.target import TargetSection
from bayesalign.contexts import ContextError, load_contexts
from bayesalign.evaluator import Evaluator
from bayesalign.extra_metrics import Metric, Misalignment, Perplexity, References
from bayesalign.models import DTYPES, LanguageModel, make_policy
from bayesalign.moments import MomentFit, MomentFitError
from bayesalign.objectives import Objective
from bayesalign.objectives.twist import twisted_policy
from bayesalign.preflight import PreflightError, check_model_name, hub_allowed
from bayesalign.progress import Status, quiet
from bayesalign.runs import RunFolder
from bayesalign.targets import Constraint, Feature, Target, Term, Tilt
from bayesalign.training import Trainer
from bayesalign.training.distributed import Distributed


def build_models(
    section: ModelSection, prompt: str, seed: int, *, twist: TwistSection | None = None
) -> tuple[LanguageModel, LanguageModel]:
    """The policy π (initialised at the prior) and the prior a; with ``twist`` (method twist's
    options) π is the prior twisted (objectives/twist.py), LoRA going on the twist's trunk."""
    torch.manual_seed(seed)  # LoRA initialisation is random
    if section.name == "toy":
        from bayesalign.toy import toy_model

        t = section.toy
        prior = toy_model(
            t.words,
            seed=t.seed,
            n_embd=t.n_embd,
            n_layer=t.n_layer,
            init_std=t.init_std,
            prompt=prompt,
            architecture=t.architecture,
            chat_template=t.chat_template,
        )
    else:
        check_model_name(section.name)
        name = str(Path(resolve_model_name(section.name)).expanduser())
        offline = not Path(name).is_dir() and not hub_allowed(section.hub)
        try:
            prior = LanguageModel.from_pretrained(
                name,
                prompt,
                dtype=DTYPES[section.dtype],
                trust_remote_code=section.trust_remote_code,
                local_files_only=offline,
            )
        except OSError as err:
            if not offline:
                raise
            raise PreflightError(
                f"model.name {section.name!r} is neither a local folder nor in the local Hugging Face "
                "cache, and downloading from the hub is off: set model.hub: true (or HF_HUB_OFFLINE=0) "
                "to download it"
            ) from err
    if section.prompt_format == "chat":
        if not prior.tokenizer.chat_template:
            raise PreflightError(
                f"model.prompt_format is chat, but the tokenizer of {section.name!r} has no chat template: "
                "set model.prompt_format: plain"
            )
        prior.chat = True
    lora = section.lora
    lora_args = None
    if lora is not None:
        lora_args = dict(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules
        )
    if twist is not None:
        return twisted_policy(prior, head=twist.head, lora=lora_args, trunk=twist.trunk), prior
    return make_policy(prior, lora_args), prior


def build_target(
    section: TargetSection,
    base: LanguageModel,
    sampling: SamplingSection | None = None,
    *,
    fitted: MomentFit | None = None,
) -> Target:
    """The target P = a · (constraints, reward, distributional factors).

    Distributional constraints need λ: fitted on ``section.fit.samples`` samples of ``base``
    drawn with ``sampling`` (the run's sampling section, so the fit sees the sequences training
    will) and seed ``section.fit.seed``, or taken from ``fitted`` (a run's saved fit, on resume).
    A scorer that cannot serve where the config puts it (a real-valued one as a constraint) is a
    ConfigError: it is the config's mistake, and the CLI says so in one line.
    """
    try:
        return _build_target(section, base, sampling, fitted)
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(f"target: {err}") from err


def _build_target(
    section: TargetSection, base: LanguageModel, sampling: SamplingSection | None, fitted: MomentFit | None
) -> Target:
    if not section.distributional:
        terms: list[Term] = [Constraint(spec.build()) for spec in section.constraints]
        if section.reward is not None:
            terms.append(Tilt(section.reward.scorer.build(), section.reward.beta))
        return Target(base, terms)
    constraints = [spec.build() for spec in section.constraints]
    features = [d.scorer.build() for d in section.distributional]
    moments = [d.moment for d in section.distributional]
    if fitted is not None:
        wanted = [(f.name, m) for f, m in zip(features, moments, strict=True)]
        saved = [(f.name, f.moment) for f in fitted.features]
        if wanted != saved:
            raise ConfigError(f"the saved fit is for features {saved}, the config asks for {wanted}")
        terms = [Constraint(c) for c in constraints]
        terms += [Feature(f, fitted.lambdas[f.name]) for f in features]
        return Target(base, terms, moment_fit=fitted)
    if sampling is None:
        raise ValueError("build_target: distributional constraints need the sampling section to fit λ")
    fit = section.fit
    try:
        return Target.constrain(
            base,
            features,
            moments,
            constraints,
            n_samples=fit.samples,
            sampling=sampling.params(),
            batch_size=sampling.batch_size,
            generator=torch.Generator().manual_seed(fit.seed),
            max_iter=fit.max_iter,
            tol=fit.tol,
        )
    except MomentFitError as err:
        raise ConfigError(f"target.distributional: {err}") from err


def build_objective(training: TrainingSection, target: Target) -> Objective:
    """A new objective for ``training.method`` (with its options) on ``target``, owning its own
    state. Reward-maximisation methods take their KL coefficient from the target unless set."""
    options = training.options
    return METHODS[training.method].objective() if options is None else options.build(target)


@dataclass(frozen=True)
class ContextSets:
    """A conditional config's contexts, read once: the training contexts, the evaluation ones
    (the first ``contexts.eval_contexts``) and their reference outputs (or None)."""

    train: list[str]
    eval: list[str]
    references: list[str] | None = None


def load_context_sets(config: Config) -> ContextSets | None:
    """The contexts of ``config`` (None if it has no contexts section), checked against what the
    config asks of them: a run reads them before its folder exists, so that a missing file,
    column or split is one error line that costs nothing. Errors name the key."""
    section = config.contexts
    sets = None
    if section is not None:
        train = _read(section, "train", section.train, section.field)
        held_out = ("train", section.train) if section.eval is None else ("eval", section.eval)
        evals = train if section.eval is None else _read(section, "eval", section.eval, section.field)
        evals = evals[: section.eval_contexts]
        references = None
        if section.reference_field is not None:
            references = _read(section, *held_out, section.reference_field)[: section.eval_contexts]
        if config.eval.samples < 2 * len(evals):
            raise ConfigError(
                f"eval.samples {config.eval.samples} gives fewer than 2 samples to each of "
                f"{len(evals)} evaluation contexts"
            )
        sets = ContextSets(train, evals, references)
    _check_columns(config, sets)
    return sets


def _read(section: ContextsSection, key: str, source: str | list[str], field: str) -> list[str]:
    try:
        return load_contexts(source, field, split=section.split, hub=hub_allowed(section.hub))
    except ContextError as err:
        raise ContextError(f"contexts.{key}: {err}") from None


def _check_columns(config: Config, sets: ContextSets | None) -> None:
    """Every column a ``callable`` scorer asks for is in every context's row."""
    for where, spec in callable_specs(config):
        for column in spec.columns:
            asks = f"{where}: scorer {spec.name!r} asks for column {column!r}"
            if sets is None:
                raise ConfigError(f"{asks}, but there is no contexts section: columns come from its rows")
            for key, contexts in (("train", sets.train), ("eval", sets.eval)):
                lacking = next((c for c in contexts if column not in getattr(c, "columns", {})), None)
                if lacking is not None:
                    has = ", ".join(getattr(lacking, "columns", {})) or "none"
                    raise ConfigError(
                        f"{asks}, which context {lacking!r} of contexts.{key} lacks "
                        f"(its other columns: {has})"
                    )


def build_evaluator(
    config: Config,
    target: Target,
    *,
    eval_contexts: list[str] | None = None,
    references: list[str] | None = None,
    status: Status = quiet,
) -> Evaluator:
    """The `Evaluator` that the eval section (and the contexts section) describe."""
    section, pool = config.eval, config.eval.pool
    extras: list[Metric] = []
    if section.perplexity_model is not None:
        extras.append(Perplexity(LanguageModel.from_pretrained(section.perplexity_model)))
    if (misaligned := section.misalignment) is not None:
        extras.append(Misalignment(misaligned.scorer.build(), misaligned.k, misaligned.threshold))
    if references is not None:
        bleu = config.contexts is not None and config.contexts.bleu
        extras.append(
            References(target.base, eval_contexts, references, bleu=bleu, micro=config.training.micro)
        )
    return Evaluator(
        target,
        samples=section.samples,
        sampling=config.sampling.params(),
        micro=config.training.micro,
        seed=config.training.seed + 1,
        sample_batch=config.sampling.batch_size,
        eval_contexts=eval_contexts,
        exact=section.exact,
        exact_limit=section.exact_limit,
        pool_samples=None if pool is None else pool.samples,
        pool_seed=0 if pool is None else pool.seed,
        pool_cache=pool is not None and pool.cache,
        pool_holdout=0.0 if pool is None else pool.holdout,
        pool_workers=0 if pool is None else pool.workers,
        metrics=extras,
        status=status,
    )


def build_trainer(
    config: Config,
    policy: LanguageModel,
    target: Target,
    objective: Objective | None = None,
    *,
    run: RunFolder | None = None,
    distributed: Distributed | None = None,
    contexts: ContextSets | None = None,
    status: Status = quiet,
) -> Trainer:
    """The `Trainer` that the config describes (``objective``: the configured method's unless
    given), with its evaluator, contexts (read from the config unless given) and checkpoint
    settings."""
    sets = contexts if contexts is not None else load_context_sets(config)
    section = config.contexts
    return Trainer(
        policy,
        target,
        objective if objective is not None else build_objective(config.training, target),
        config.training,
        sampling=config.sampling,
        evaluator=build_evaluator(
            config,
            target,
            eval_contexts=None if sets is None else sets.eval,
            references=None if sets is None else sets.references,
            status=status,
        ),
        eval_every=config.eval.every,
        save_samples=config.eval.save_samples,
        checkpoints=config.checkpoint,
        contexts=None if sets is None else sets.train,
        contexts_per_step=8 if section is None else section.per_step,
        run=run,
        distributed=distributed,
    )
