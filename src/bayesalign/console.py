"""How metrics reach the console: the exact value where a toy config computed one (``exact_*``),
the estimate otherwise; never a bare negative KL; and the before/after table that ends every
``train``. Display only: metrics.jsonl keeps every raw value, negative estimates included."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

from bayesalign.runs import metric_names as names

NOISE = 3.0  # a negative KL estimate within this many standard errors of 0 is noise


def pick(record: dict, key: str, exact: bool = True) -> tuple[str, float, float | None] | None:
    """(name, value, stderr) to show for ``key``: ``exact_<key>`` when ``exact`` and the record
    has it (an exact value has no standard error), else the estimate; None when neither is there."""
    if exact and f"exact_{key}" in record:
        return f"exact_{key}", record[f"exact_{key}"], None
    if key in record and record[key] is not None:
        return key, record[key], record.get(f"{key}_stderr")
    return None


def is_kl(name: str) -> bool:
    return name.removeprefix("exact_").startswith("kl_")


def format_value(name: str, value: float, stderr: float | None = None) -> str:
    """``value`` to 4 significant digits; a KL below 0 (impossible, so estimator noise or float
    rounding) as "≈0", and with its value when it lies further than NOISE standard errors below
    0, which noise does not explain."""
    if not (is_kl(name) and value < 0):
        return f"{value:.4g}"
    if stderr is not None and -value > NOISE * stderr:
        return f"≈0 (estimate {value:.2g}, {-value / stderr:.0f} stderr below 0)"
    return "≈0"


def metric_text(record: dict, key: str) -> str | None:
    """``name=value`` for the headline of a record, or None when the record lacks the key."""
    shown = pick(record, key)
    if shown is None:
        return None
    name, value, stderr = shown
    return f"{name}={format_value(name, value, stderr)}"


def headline(record: dict, keys: Sequence[str]) -> str:
    """``name=value`` of the keys the record holds, in the given order, exact where known."""
    return "  ".join(text for key in keys if (text := metric_text(record, key)) is not None)


#: estimates that rest on importance weights P/q of the evaluation's proposal samples (or on the
#: Z those weights give): only as good as the weights' effective sample size, ``ess``
IMPORTANCE_SAMPLED = frozenset({names.KL_P_PI, names.KL_PI_P, names.KL_P_A, "tv_p_pi"})
#: pool metrics that also read π's own samples (E_π[b]): their error is both estimates' together
MIXED = frozenset({"pool_kl_p_pi_within"})


def how_measured(name: str) -> str:
    """How the record value ``name`` was obtained, read from its name (`metric_names`): exact
    (enumerated), on the posterior pool's exact p-samples, on π's samples against the pool (the
    frontier's numbers), an importance-sampling estimate, or on π's own samples. The model card
    and the before/after table both say it this way."""
    if name.startswith("exact_"):
        return "exact"
    if name.startswith("frontier_") or name in MIXED:
        return "π's samples + exact p-samples"
    if name.startswith("pool_"):
        return "exact p-samples"
    if name in IMPORTANCE_SAMPLED:
        return "IS estimate"
    return "π's samples"


def before_after_table(records: Sequence[dict], keys: Sequence[str], seconds: float | None = None) -> Table:
    """The first and last evaluation of a run side by side: π = a before, the trained π after.
    Each row is exact when both records hold the exact value, an estimate ± stderr otherwise,
    and says how it was measured. KL(p‖a) = −log Z is a constant of the target: where a
    posterior pool measured it, its row shows the pool's value (the same before and after)
    instead of an importance-sampling estimate that moves with the evaluation's samples."""
    before, after = records[0], records[-1]
    took = f", {seconds:.0f} s" if seconds is not None else ""
    table = Table(title=f"before (step {before['step']}, π = a) vs after (step {after['step']}){took}")
    for column in ("metric", "before", "after", "how"):
        table.add_column(column, justify="left" if column in ("metric", "how") else "right")
    for key in keys:
        exact = f"exact_{key}" in before and f"exact_{key}" in after
        source = key
        if key == names.KL_P_A and not exact and all(names.POOL_KL_P_A in r for r in (before, after)):
            source = names.POOL_KL_P_A
        cells = []
        for record in (before, after):
            shown = pick(record, source, exact)
            if shown is None:
                break
            name, value, stderr = shown
            error = f" ± {stderr:.2g}" if stderr is not None else ""
            cells.append(format_value(name, value, stderr) + error)
        if len(cells) == 2:
            how = how_measured(name)
            if how == "IS estimate" and "ess" in before and "ess" in after:
                how += f", ESS {before['ess']:.0f} → {after['ess']:.0f}"  # weights of a handful say so
            if source == names.POOL_KL_P_A:
                how += " (−log Z, a constant)"
            table.add_row(key, *cells, how)
    return table
