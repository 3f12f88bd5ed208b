"""Names of the metrics in a run's records (metrics.jsonl), written once, with the title and
family each is shown under (`title`, `family`: the report's plots and tables).

Suffixes say which distribution a number is about: ``_pi`` the policy π, ``_q`` the proposal,
``_a`` the prior, ``_p`` the posterior. Prefixes say how it was obtained: none for
importance-sampling estimates from q's samples, ``pool_`` for estimates on exact p-samples of
the posterior pool, ``exact_`` for values enumerated over a toy space; ``<name>_stderr`` is a
standard error. docs/concepts.md explains each.
"""

from __future__ import annotations

from collections.abc import Iterable

SATISFACTION_PI = "satisfaction_pi"
KL_P_PI = "kl_p_pi"
KL_PI_P = "kl_pi_p"
KL_PI_A = "kl_pi_a"
KL_P_A = "kl_p_a"
ENTROPY_PI = "entropy_pi"
POOL_KL_P_PI = "pool_kl_p_pi"
POOL_KL_P_A = "pool_kl_p_a"
POOL_KL_GAIN_PI = "pool_kl_gain_pi"
POOL_ACCEPTED = "pool_accepted"
POOL_AT_BOUND = "pool_at_bound"
FRONTIER_EXCESS = "frontier_excess"
REFERENCE_NLL_PI = "reference_nll_pi"
EXACT_PREFIX = "exact_"

#: what a reader looks at first, in this order (reports, tables, summaries)
HEADLINE = (SATISFACTION_PI, POOL_KL_P_PI, FRONTIER_EXCESS, KL_P_PI, KL_PI_P, KL_PI_A, KL_P_A)
#: after the headline in reports and comparisons
QUALITY = (ENTROPY_PI, "distinct_1_pi", "distinct_2_pi", REFERENCE_NLL_PI)
#: counters and settings: in the records, not worth a plot or a row
BOOKKEEPING = frozenset(
    {
        "step",
        "samples_seen",
        "seconds",
        "processes",
        "proposal_updates",
        "ess_low",
        "pool_z",
        "pool_size",
        POOL_ACCEPTED,
        "pool_reliable",
        "pool_bound_observed",
        POOL_AT_BOUND,
        "pool_draw_seconds",
        "pool_holdout",
    }
)


#: the target's own numbers (log Z, KL(p‖a) = −log Z, E_p of a moment feature): they do not
#: move with π, so a plot of their estimates shows noise only; a summary shows each once
TARGET_CONSTANTS = frozenset({KL_P_A, "log_z", "minus_log_z", "z", POOL_KL_P_A, "pool_log_z", "pool_z"})

#: the families a report groups its plots under, in order ("other": a metric not in TITLES)
FAMILIES = (
    "posterior quality",
    "constraint and reward scores",
    "distance from the prior",
    "diversity",
    "the proposal q",
    "training",
    "other",
)
POSTERIOR, SCORES, DISTANCE, DIVERSITY, PROPOSAL, TRAINING, OTHER = FAMILIES
#: key → (title in words, family); pool_/exact_ variants and patterned names: see `title`
TITLES: dict[str, tuple[str, str]] = {
    KL_P_PI: ("KL(p‖π)", POSTERIOR),
    KL_PI_P: ("KL(π‖p)", POSTERIOR),
    "tv_p_pi": ("TV(p, π)", POSTERIOR),
    POOL_KL_GAIN_PI: ("KL(p‖a) − KL(p‖π), paired, on exact p-samples", POSTERIOR),
    FRONTIER_EXCESS: ("frontier excess KL(π‖a) / KL*", POSTERIOR),
    "frontier_kl": ("frontier KL* at π's statistic", POSTERIOR),
    "frontier_statistic_pi": ("frontier statistic under π", POSTERIOR),
    "frontier_kl_p_pi": ("least KL(p‖π) at π's satisfaction, −log E_π[b]", POSTERIOR),
    "kl_p_pi_within": ("KL(p‖π(·|b)): KL(p‖π) beyond −log E_π[b]", POSTERIOR),
    SATISFACTION_PI: ("satisfaction under π", SCORES),
    "reward": ("reward of the training batch", SCORES),
    KL_PI_A: ("KL(π‖a)", DISTANCE),
    REFERENCE_NLL_PI: ("reference NLL under π", DISTANCE),
    "reference_nll_a": ("reference NLL under a", DISTANCE),
    "perplexity_pi": ("perplexity of π", DISTANCE),
    "bleu_pi": ("BLEU of π's samples", DISTANCE),
    ENTROPY_PI: ("entropy H(π)", DIVERSITY),
    "ngram_entropy_2_pi": ("bigram entropy of π's samples", DIVERSITY),
    "length_pi": ("mean length under π", DIVERSITY),
    "satisfaction_q": ("satisfaction under q", PROPOSAL),
    "kl_p_q": ("KL(p‖q)", PROPOSAL),
    "tv_p_q": ("TV(p, q)", PROPOSAL),
    "kl_q_a": ("KL(q‖a)", PROPOSAL),
    "proposal_replaced": ("proposal replaced by π", PROPOSAL),
    "loss": ("loss", TRAINING),
    "grad_norm": ("gradient norm", TRAINING),
    "lr": ("learning rate", TRAINING),
    "ess": ("effective sample size of the IS weights", TRAINING),
    "running_log_z": ("log Z, running estimate of training", TRAINING),
    "tb_log_z": ("log Z, batch optimum (trajectory balance)", TRAINING),
    "tb_std": ("trajectory-balance residual s.d.", TRAINING),
    "kl_coef": ("KL coefficient β", TRAINING),
    "contexts_without_support": ("contexts without a satisfying sample", TRAINING),
    "log_z_c_min": ("least log Z_c over contexts", TRAINING),
    "log_z_c_max": ("greatest log Z_c over contexts", TRAINING),
    KL_P_A: ("KL(p‖a)", POSTERIOR),
    "log_z": ("log Z", POSTERIOR),
    "minus_log_z": ("−log Z", POSTERIOR),
    "z": ("Z", POSTERIOR),
}


def _patterned(name: str) -> tuple[str, str] | None:
    """Titles of the metrics whose names carry a scorer, an n or an estimator."""
    who = {"pi": ("π", SCORES), "q": ("q", PROPOSAL)}
    stem, _, end = name.rpartition("_")
    if name.startswith("score_") and end in who:
        return f"score {stem.removeprefix('score_')} under {who[end][0]}", who[end][1]
    if name.startswith("moment_") and end in who:
        return f"E_{who[end][0]}[{stem.removeprefix('moment_')}]", who[end][1]
    if name.startswith("moment_") and end == "p":
        return f"E_p[{stem.removeprefix('moment_')}]", POSTERIOR
    if name.startswith("distinct_") and end == "pi":
        return f"distinct-{stem.removeprefix('distinct_')} of π's samples", DIVERSITY
    if name.startswith("expected_max_misalignment_"):
        k = name.removeprefix("expected_max_misalignment_").removesuffix("_pi")
        return f"expected max misalignment of {k} samples of π", SCORES
    if name.startswith("kl_") and name.endswith("_pi_a"):  # kl_<estimator>_pi_a: the batch's
        return f"KL(π‖a), {name[3:-5]} estimate on the training batch", DISTANCE
    if name.startswith("check_") and name.removeprefix("check_") in TITLES:  # check_<kl|tv>_p_<pi|q>
        return TITLES[name.removeprefix("check_")][0] + ", at the proposal check", PROPOSAL
    return None


def title_and_family(name: str) -> tuple[str, str]:
    """(title in words, family) of a metric; an unknown one is titled by its key, family "other".
    ``exact_<name>`` and ``pool_<name>`` share ``name``'s family and say how they were obtained."""
    plain = name.removeprefix(EXACT_PREFIX)
    found, pooled = TITLES.get(plain) or _patterned(plain), False
    if found is None and plain.startswith("pool_"):
        found, pooled = TITLES.get(plain[5:]) or _patterned(plain[5:]), True
    if found is None:
        return name, OTHER
    words, group = found
    if pooled:
        words += ", on exact p-samples"
    if name.startswith(EXACT_PREFIX):
        words += ", exact"
    return words, group


def title(name: str) -> str:
    """A metric's title in words (its key when unknown)."""
    return title_and_family(name)[0]


def family(name: str) -> str:
    """The family a metric is shown under (FAMILIES; "other" when unknown)."""
    return title_and_family(name)[1]


def is_target_constant(name: str) -> bool:
    """log Z, KL(p‖a), E_p[feature] and their pool/exact variants: numbers of the target, not of π."""
    base = name.removeprefix(EXACT_PREFIX)
    return base in TARGET_CONSTANTS or (base.startswith("moment_") and base.endswith("_p"))


def exact(name: str) -> str:
    """The exact counterpart of an estimated metric (toy spaces)."""
    return f"{EXACT_PREFIX}{name}"


def reward_scores(names: Iterable[str]) -> list[str]:
    """The scores of π under the target's scorers (``score_<scorer>_pi``), sorted."""
    return sorted({n for n in names if n.startswith("score_") and n.endswith("_pi")})


def is_timing(name: str) -> bool:
    """Seconds (``seconds``, ``time_<phase>_wall``/``_cpu``): the only values that differ between
    two runs that are otherwise identical (a resumed run and an uninterrupted one)."""
    return name == "seconds" or name.startswith("time_")


def is_bookkeeping(name: str) -> bool:
    """Counters and timings (``time_<phase>_wall``/``_cpu``): in the records, not plotted."""
    return name in BOOKKEEPING or name.startswith("time_")
