"""Names of the metrics in a run's records (metrics.jsonl), written once.

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

#: what a reader looks at first, in this order (reports, tables, summaries)
HEADLINE = (SATISFACTION_PI, POOL_KL_P_PI, FRONTIER_EXCESS, KL_P_PI, KL_PI_P, KL_PI_A, KL_P_A)
#: after the headline in reports and comparisons
QUALITY = (ENTROPY_PI, "distinct_1_pi", "distinct_2_pi", REFERENCE_NLL_PI)
#: bookkeeping and constants of the target: in the tables, not worth a plot
BOOKKEEPING = frozenset(
    {
        "step",
        "samples_seen",
        "seconds",
        "lr",
        "z",
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


def exact(name: str) -> str:
    """The exact counterpart of an estimated metric (toy spaces)."""
    return f"exact_{name}"


def reward_scores(names: Iterable[str]) -> list[str]:
    """The scores of π under the target's scorers (``score_<scorer>_pi``), sorted."""
    return sorted({n for n in names if n.startswith("score_") and n.endswith("_pi")})


def is_timing(name: str) -> bool:
    """Seconds (``seconds``, ``time_<phase>_wall``/``_cpu``): the only values that differ between
    two runs that are otherwise identical (a resumed run and an uninterrupted one)."""
    return name == "seconds" or name.startswith("time_")


def is_bookkeeping(name: str) -> bool:
    """Counters, constants of the target and timings (``time_<phase>_wall``/``_cpu``): in the
    records and tables, not plotted."""
    return name in BOOKKEEPING or name.startswith("time_")
