"""Distributional constraints: choose λ so that the target has the wanted moments.

Among all distributions whose features φ have the expectations μ̄ and that satisfy the pointwise
constraints b, the one closest to the prior (minimal KL(·‖a)) is (Khalifa et al. 2021)

    p_λ(x) ∝ a(x) · Π_j b_j(x) · exp(λ·φ(x)),

with λ the maximiser of the concave dual  D(λ) = λ·μ̄ − log Z(λ),  Z(λ) = Σ_x a(x)·b(x)·exp(λ·φ(x)).
Its gradient is μ̄ − E_λ[φ] and its Hessian −Cov_λ(φ), so Newton's method converges in a handful
of iterations where plain gradient ascent (GDC, disco) needs hundreds.

`solve_dual` runs that Newton method over a finite set of weighted points: samples x_i ~ q with
base weights a·b/q (self-normalised importance sampling), or every sequence of an enumerable
space with weights a·b (exact expectations). Everything stays in log space: weights are
normalised with logsumexp and features are centred, so λ·φ in the thousands neither overflows nor
costs precision. `Target.constrain` (targets.py) is the entry point that draws the samples and
builds the target; this module knows nothing of targets (it sits below them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

ARMIJO = 1e-4  # sufficient increase of the dual, as a fraction of the Newton step's predicted one
MAX_HALVINGS = 60  # line-search halvings before a step counts as stalled
RCOND = 1e-9  # a (scaled) covariance with smaller relative eigenvalues is treated as singular
DAMPING = 1e-6  # relative damping of a singular covariance (Levenberg-Marquardt step)


class MomentFitError(ValueError):
    """λ cannot be fitted as asked; the message names the feature. ``fit`` holds the last state of
    a fit that ran but did not converge (None when the problem was refused up front)."""

    def __init__(self, message: str, fit: MomentFit | None = None) -> None:
        super().__init__(message)
        self.fit = fit


@dataclass(frozen=True)
class FeatureMoment:
    """One feature of a fit: the wanted moment μ̄, the fitted λ, and E_p[φ] reached with it."""

    name: str
    moment: float
    lam: float
    achieved: float
    lam_stderr: float | None = None  # sampling error of λ (delta method); None for an exact fit

    @property
    def error(self) -> float:
        return abs(self.achieved - self.moment)


@dataclass(frozen=True)
class MomentFit:
    """What fitting λ did. ``achieved`` moments and ``ess`` are computed on the fit's own points:
    the self-normalised IS estimate on the samples (``exact`` False), or exact sums."""

    features: tuple[FeatureMoment, ...]
    n_samples: int  # samples drawn (or sequences of the space) for the fit
    n_support: int  # of them, those that satisfy every pointwise constraint
    ess: float | None  # (Σw)²/Σw² of the IS weights at the fitted λ; None for an exact fit
    iterations: int  # Newton iterations taken
    converged: bool
    exact: bool
    kl_p_a: float  # KL(p‖a) = λ·μ̄ − log Z at the fitted λ (the dual's value): what the evidence costs

    @property
    def lambdas(self) -> dict[str, float]:
        return {f.name: f.lam for f in self.features}

    @property
    def error(self) -> float:
        """The largest |E_p[φ] − μ̄| over the features, at the fitted λ."""
        return max(f.error for f in self.features)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["features"] = [asdict(f) for f in self.features]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> MomentFit:
        features = tuple(FeatureMoment(**f) for f in data["features"])
        return cls(**{**data, "features": features})

    def summary(self) -> str:
        kept = f"{self.n_support:,} satisfy the constraints, " if self.n_support < self.n_samples else ""
        how = (
            f"exactly on {self.n_samples:,} sequences"
            if self.exact
            else f"on {self.n_samples:,} samples ({kept}ESS {self.ess:,.0f})"
        )
        state = "converged" if self.converged else "NOT converged"
        return (
            f"λ fitted {how}, {self.iterations} Newton iterations, {state}; KL(p‖a) = {self.kl_p_a:.4g} nats"
        )


def check_counts(names: Sequence[str], moments: Sequence[float]) -> None:
    if len(moments) != len(names):
        raise MomentFitError(
            f"got {len(moments)} moments for {len(names)} features {list(names)}; give one target "
            "moment per feature, in the same order"
        )
    if not names:
        raise MomentFitError("a distributional constraint needs at least one feature and its moment")
    bad = [(n, m) for n, m in zip(names, moments, strict=True) if not math.isfinite(m)]
    if bad:
        raise MomentFitError(f"the moment of feature {bad[0][0]!r} must be a finite number, got {bad[0][1]}")


def _check_reachable(name: str, moment: float, values: torch.Tensor, where: str, boolean: bool) -> None:
    lo, hi = values.min().item(), values.max().item()
    if lo == hi:
        fires = "never fires" if lo == 0 else "never varies"
        raise MomentFitError(
            f"feature {name!r} {fires}: it is {lo:g} on all {where}, so no λ can move its moment "
            f"to {moment:g}. Draw more samples (n_samples / target.fit.samples), or drop the feature"
        )
    if not lo < moment < hi:
        edge = "∞" if moment >= hi else "−∞"
        hint = ""
        if boolean and moment >= 1:
            hint = (
                f" A moment of 1 for a boolean feature means every sample must satisfy it: make "
                f"{name!r} a pointwise constraint instead."
            )
        elif boolean and moment <= 0:
            hint = (
                " A moment of 0 for a boolean feature means no sample may satisfy it: use a "
                "pointwise constraint on its negation instead."
            )
        raise MomentFitError(
            f"target moment {moment:g} for feature {name!r} is outside what the samples can reach: "
            f"on {where} it ranges over [{lo:g}, {hi:g}], and a moment must lie strictly inside "
            f"(reaching an end would need λ = {edge}).{hint}"
        )


def _normalised(log_base: torch.Tensor, phi: torch.Tensor, lam: torch.Tensor):
    """log p_λ on the points and E_λ[φ] (both float64, from logsumexp: never overflows)."""
    logits = log_base + phi @ lam
    log_p = logits - torch.logsumexp(logits, 0)
    return log_p, log_p.exp() @ phi


def _newton_direction(cov: torch.Tensor, g: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Solve Cov·d = g, in units where every feature spans 1; damped where Cov is singular."""
    c = cov / torch.outer(scale, scale)
    r = g / scale
    eigval, eigvec = torch.linalg.eigh(c)
    top = eigval.max().clamp_min(0.0)
    damp = 0.0
    if not (top > 0 and eigval.min() > RCOND * top):
        damp = DAMPING * top.item() + 1e-12  # Levenberg-Marquardt: a shorter, gradient-like step
    d = eigvec @ ((eigvec.T @ r) / (eigval.clamp_min(0.0) + damp))
    return d / scale


def _lambda_stderr(log_p: torch.Tensor, centred: torch.Tensor) -> list[float]:
    """Standard errors of the SNIS-fitted λ, by the delta method on μ̂(λ̂) = μ̄.

    λ̂ − λ ≈ H⁻¹(μ̂(λ) − μ_p), with H = Cov_p(φ); the SNIS moment error has covariance
    V ≈ Σ_i p̃_i² (φ_i − μ)(φ_i − μ)ᵀ (p̃: normalised weights), so Cov(λ̂) ≈ H⁻¹ V H⁻¹.
    """
    p = log_p.exp()
    h = (centred * p[:, None]).T @ centred
    v = (centred * (p**2)[:, None]).T @ centred
    h_inv = torch.linalg.pinv(h, hermitian=True)
    return (h_inv @ v @ h_inv).diagonal().clamp_min(0.0).sqrt().tolist()


def solve_dual(
    log_base: torch.Tensor,
    features: torch.Tensor,
    moments: Sequence[float],
    names: Sequence[str],
    *,
    max_iter: int = 100,
    tol: float = 1e-6,
    exact: bool = False,
    boolean: Sequence[bool] | None = None,
) -> MomentFit:
    """λ maximising λ·μ̄ − log Σ_i exp(log_base_i + λ·φ_i), by Newton's method.

    ``log_base``: [n] log of each point's weight at λ = 0 (log a + Σ log b − log q for samples
    from q; log a + Σ log b on an enumerated space); −inf where a pointwise constraint fails.
    ``features``: [n, F] the feature values φ_f(x_i). ``moments``: the F wanted moments μ̄.
    Stops when every |μ̄_f − E_λ[φ_f]| ≤ ``tol`` (in the feature's own units); raises
    `MomentFitError` when the moments cannot be reached or the fit does not converge.
    """
    names = tuple(names)
    moments = [float(m) for m in moments]
    check_counts(names, moments)
    phi, log_base = features.double(), log_base.double()
    if phi.shape != (len(log_base), len(names)):
        raise ValueError(f"features must be [{len(log_base)}, {len(names)}], got {tuple(phi.shape)}")
    if torch.isnan(log_base).any() or (log_base == math.inf).any() or not torch.isfinite(phi).all():
        raise ValueError("log-weights or feature values contain NaN or +inf: check the scorers and log-probs")
    unit = "sequences of the space" if exact else "samples"
    support = log_base > -math.inf
    n, n_support = len(log_base), int(support.sum())
    if n_support == 0:
        raise MomentFitError(
            f"none of the {n} {unit} satisfies the pointwise constraints, so no moment can be "
            "fitted; loosen the constraints or draw more samples"
        )
    where = f"the {n_support} {unit}" + (" that satisfy the pointwise constraints" if n_support < n else "")
    phi, log_base = phi[support], log_base[support]
    boolean = boolean or [False] * len(names)
    for f, (name, moment) in enumerate(zip(names, moments, strict=True)):
        _check_reachable(name, moment, phi[:, f], where, boolean[f])

    # centre (and, in the Newton solve, scale) each feature by its range on the points: λ is
    # unchanged by the shift, and moments keep their precision whatever the offset of φ
    lo, hi = phi.min(0).values, phi.max(0).values
    centre, scale = (lo + hi) / 2, hi - lo
    phi = phi - centre
    target = torch.tensor(moments, dtype=torch.float64) - centre
    lam = torch.zeros(len(names), dtype=torch.float64)
    log_p, mu = _normalised(log_base, phi, lam)
    iterations = 0
    while iterations < max_iter:
        g = target - mu
        if g.abs().max().item() <= tol:
            break
        centred = phi - mu
        cov = (centred * log_p.exp()[:, None]).T @ centred
        d = _newton_direction(cov, g, scale)
        slope = (g @ d).item()
        if not slope > 0:  # cannot happen for a PSD covariance; plain gradient step as a guard
            d, slope = g / scale**2, (g @ (g / scale**2)).item()
        # backtracking on the dual's exact increase: D(λ+Δ) − D(λ) = Δ·g − log E_λ[e^{Δ·(φ−μ)}]
        t, accepted = 1.0, False
        for _ in range(MAX_HALVINGS):
            step = t * d
            gain = (step @ g - torch.logsumexp(log_p + centred @ step, 0)).item()
            if gain >= ARMIJO * t * slope:
                accepted = True
                break
            t /= 2
        if not accepted:  # no ascent left at float64 precision
            break
        lam = lam + step
        log_p, mu = _normalised(log_base, phi, lam)
        iterations += 1

    converged = (target - mu).abs().max().item() <= tol
    # the dual's value λ·μ̄ − log Z is KL(p‖a); Z is a mean over samples, a sum over a space
    log_z = torch.logsumexp(log_base + phi @ lam, 0).item() - (0.0 if exact else math.log(n))
    kl_p_a = (lam @ target).item() - log_z
    stderr = [None] * len(names) if exact else _lambda_stderr(log_p, phi - mu)
    fit = MomentFit(
        features=tuple(
            FeatureMoment(name, moment, lam[f].item(), (mu[f] + centre[f]).item(), stderr[f])
            for f, (name, moment) in enumerate(zip(names, moments, strict=True))
        ),
        n_samples=n,
        n_support=n_support,
        ess=None if exact else math.exp(-torch.logsumexp(2 * log_p, 0).item()),
        iterations=iterations,
        converged=converged,
        exact=exact,
        kl_p_a=kl_p_a,
    )
    if not converged:
        worst = max(fit.features, key=lambda f: f.error)
        details = ", ".join(
            f"{f.name!r}: wanted {f.moment:g}, reached {f.achieved:.6g}" for f in fit.features
        )
        stop = (
            f"within {max_iter} Newton iterations"
            if iterations == max_iter
            else (f"after {iterations} Newton iterations (the line search found no further ascent)")
        )
        raise MomentFitError(
            f"fitting λ did not converge {stop}: remaining error {fit.error:.3g} > tol {tol:g} on "
            f"feature {worst.name!r} ({details}). Moments may be unreachable together (e.g. "
            "features that always fire together asked for different moments); check them, or "
            "raise max_iter / tol",
            fit,
        )
    return fit
