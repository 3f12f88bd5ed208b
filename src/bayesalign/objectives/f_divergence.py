"""f-DPG: minimise any f-divergence D_f(π‖p) with importance-weighted policy gradients.

Go, Korbak, Kruszewski, Rozen, Ryu, Dymetman, "Aligning Language Models with Preferences through
f-divergence Minimization", ICML 2023. With t(x) = π(x)/p(x),

    D_f(π‖p) = Σ_x p(x)·f(t(x))                       (plus f′(∞)·π(p = 0), see below)
    ∇_θ D_f  = Σ_x f′(t(x))·∇π(x) = −E_{x∼π}[R(x)·∇log π(x)],   R = −f′(t)  (the "pseudo-reward")
             = −E_{x∼q}[(π(x)/q(x))·(R(x) − B)·∇log π(x)]      for any proposal q and constant B.

So the per-sample loss is −(π/q)·(R − B)·log π with π/q, R and B detached: a REINFORCE loss on a
pseudo-reward that depends on π, importance-corrected for samples drawn from q. B does not change
the expectation (E_q[(π/q)·∇log π] = Σ_x ∇π(x) = 0); it lowers the variance.

| divergence   | f(t)                        | R = −f′(t)              | limit where P(x) = 0 (t = ∞)   |
|--------------|-----------------------------|-------------------------|--------------------------------|
| forward_kl   | −log t       (KL(p‖π))      | p/π = 1/t               | 0                              |
| reverse_kl   | t·log t      (KL(π‖p))      | log p − log π − 1       | −∞: refused, or clipped        |
| js           | t·log(2t/(1+t)) + log(2/(1+t)) (2·JS) | −log(2t/(1+t)) | −log 2                         |
| tv           | ½|t − 1|     (TV(π, p))     | −½·sign(log t)          | −½                             |

- forward_kl is DPG: on samples of q, (π/q)·(p/π) = p/q. With the baseline B ≈ E_π[p/π] = 1 its
  advantage (π/q)·(p/π − 1) = p/q − π/q is GDC++'s.
- reverse_kl is KL-regularised RL seen as distribution matching: for a tilt target p ∝ a·exp(r/β),
  R = r/β − (log π − log a) − log Z − 1, i.e. (1/β)·(r − β·(log π − log a)) up to a constant, so
  its gradient is −1/β times that of E_π[r] − β·KL(π‖a) and the two share their fixed point.
- js is computed as softplus(−log t) − log 2 = log(1 + 1/t) − log 2, finite for every t including
  t = ∞. The f above is 2·JS's (the scaling of the reference implementation); JS itself halves it.

Where P(x) = 0. Every sample there has t = ∞. For an f whose f′ has a finite limit f′(∞), the
divergence includes f′(∞)·π({P = 0}) and its gradient w.r.t. that mass is f′(∞): the pseudo-rewards
0, −log 2 and −½ above are exactly right, not a patch. For reverse KL, f′(∞) = ∞: KL(π‖p) is
infinite as soon as π puts mass where p has none and has no gradient to follow. Reverse KL
therefore needs p > 0 wherever π > 0 (a reward tilt, or a distributional target, never a pointwise
constraint), and `FDPG` refuses a target with constraints, and any sample with P = 0, with
`InfiniteDivergenceError`. Opting in with ``max_log_ratio = C`` clips log t at C instead. That is
itself an f-divergence, "capped reverse KL", with

    f_C(t) = t·log t  (t ≤ e^C),   (C + 1)·t − e^C  (t > e^C)

(convex, f_C(1) = 0, strictly convex at 1, so its only minimiser is still p). It equals KL(π‖p)
wherever π ≤ e^C·p, and charges C + 1 per unit of π's mass where P = 0, so samples that violate a
constraint get the finite pseudo-reward −(C + 1) and are pushed down, as hard as C says.

The baseline B is an importance-weighted moving average of the pseudo-rewards of the last
``baseline_window`` samples, Σ w·R / Σ w with w = π/q: it estimates E_π[R], the natural baseline
(on-policy it is the plain mean; off-policy an unweighted mean would estimate E_q[R], which for
forward KL is not the 1 that makes the advantage GDC++'s). The loss of a batch uses the baseline
as it stood before the batch (so B never depends on the sample it is subtracted from), and the
batch's pseudo-rewards join the window when the trainer calls :meth:`FDPG.after_update`, once per
optimizer update: the result does not depend on how an update is split into micro-batches. The
window is per instance and is saved in checkpoints (:meth:`FDPG.state_dict`), so a resumed run
continues with the same baseline.

p = P/Z uses the trainer's running estimate of log Z (the batch's ``log_z``). For forward and
reverse KL an error in Z scales or shifts every pseudo-reward alike, which the baseline and the
learning rate absorb; for js and tv it moves the point where R changes sign, so those need a good
Z estimate (enough samples per step).

In a config: ``training: {method: f-dpg, f_dpg: {divergence: js, baseline_window: 1024}}``
(``max_log_ratio: C`` for capped reverse KL); see ``FDPGSection`` in config/methods.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, get_args

import torch
import torch.nn.functional as F

from bayesalign.objectives.base import Batch, Objective, PolicyOutput

if TYPE_CHECKING:
    from bayesalign.targets import Target

Divergence = Literal["forward_kl", "reverse_kl", "js", "tv"]
DIVERGENCES: tuple[str, ...] = get_args(Divergence)


class InfiniteDivergenceError(ValueError):
    """The divergence is infinite for this target (reverse KL where P(x) = 0)."""


# -- pseudo-rewards R = −f′(t), from log t = log π − log p; each finite at log t = +inf except reverse KL
def forward_kl_reward(log_t: torch.Tensor) -> torch.Tensor:
    """p/π = exp(−log t); 0 where P = 0."""
    return torch.exp(-log_t)


def reverse_kl_reward(log_t: torch.Tensor) -> torch.Tensor:
    """log p − log π − 1 = −log t − 1; −inf where P = 0 (FDPG refuses it or clips log t first)."""
    return -log_t - 1.0


def js_reward(log_t: torch.Tensor) -> torch.Tensor:
    """−log(2t/(1+t)) = softplus(−log t) − log 2, stable for every t; −log 2 where P = 0."""
    return F.softplus(-log_t) - math.log(2.0)


def tv_reward(log_t: torch.Tensor) -> torch.Tensor:
    """−½·sign(log t): push π up where it is below p, down where above; −½ where P = 0."""
    return -0.5 * torch.sign(log_t)


PSEUDO_REWARDS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "forward_kl": forward_kl_reward,
    "reverse_kl": reverse_kl_reward,
    "js": js_reward,
    "tv": tv_reward,
}
assert tuple(PSEUDO_REWARDS) == DIVERGENCES


class MovingBaseline:
    """Importance-weighted mean of the pseudo-rewards of the last ``window`` samples.

    ``value`` = Σ w·R / Σ w over the window (0 while it is empty), computed from log w so no weight
    overflows. ``observe`` records a batch as pending; ``commit`` moves what is pending into the
    window, dropping the oldest samples beyond ``window``.
    """

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError(f"baseline window must be >= 1 sample, got {window}")
        self.window = window
        empty = torch.empty(0, dtype=torch.float64)
        self.log_w, self.reward = empty, empty  # the window
        self.pending_log_w, self.pending_reward = empty, empty  # seen since the last commit

    def __len__(self) -> int:
        return len(self.reward)

    @property
    def value(self) -> float:
        if not len(self):
            return 0.0
        return float((torch.softmax(self.log_w, 0) * self.reward).sum())

    def observe(self, log_w: torch.Tensor, reward: torch.Tensor) -> None:
        keep = -self.window
        self.pending_log_w = torch.cat([self.pending_log_w, log_w.detach().double().cpu()])[keep:]
        self.pending_reward = torch.cat([self.pending_reward, reward.detach().double().cpu()])[keep:]

    def commit(self) -> None:
        keep = -self.window
        self.log_w = torch.cat([self.log_w, self.pending_log_w])[keep:]
        self.reward = torch.cat([self.reward, self.pending_reward])[keep:]
        self.pending_log_w = self.pending_reward = torch.empty(0, dtype=torch.float64)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "log_w": self.log_w.clone(),
            "reward": self.reward.clone(),
            "pending_log_w": self.pending_log_w.clone(),
            "pending_reward": self.pending_reward.clone(),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        expected = {"log_w", "reward", "pending_log_w", "pending_reward"}
        if set(state) != expected:
            raise ValueError(f"baseline state has keys {sorted(state)}, expected {sorted(expected)}")
        for a, b in (("log_w", "reward"), ("pending_log_w", "pending_reward")):
            if state[a].shape != state[b].shape or state[a].dim() != 1 or len(state[a]) > self.window:
                raise ValueError(
                    f"baseline state {a}/{b} has shapes {tuple(state[a].shape)}/{tuple(state[b].shape)}; "
                    f"expected two equal 1-D lengths of at most the window ({self.window})"
                )
        self.log_w, self.reward = state["log_w"].double().clone(), state["reward"].double().clone()
        self.pending_log_w = state["pending_log_w"].double().clone()
        self.pending_reward = state["pending_reward"].double().clone()


def check_clip(divergence: str, max_log_ratio: float | None) -> None:
    """``max_log_ratio`` clips reverse KL's unbounded pseudo-reward; the other divergences are
    bounded where P = 0 and take no clip (the config's f_dpg section checks with this too)."""
    if max_log_ratio is None:
        return
    if divergence != "reverse_kl":
        raise ValueError(
            f"max_log_ratio applies to divergence 'reverse_kl' only ({divergence} is bounded where P = 0)"
        )
    if not max_log_ratio > 0:
        raise ValueError(f"max_log_ratio must be > 0 (so p stays the minimiser), got {max_log_ratio}")


class FDPG(Objective):
    """f-DPG loss for one divergence (see the module docstring for the maths and the choices).

    loss(x) = −(π/q)·(R(x) − B)·log π(x), x ∼ q, R = −f′(π/p), B the moving-average baseline.
    Each instance owns its baseline; it is state, exposed by ``state_dict``/``load_state_dict``
    for checkpoints and advanced by ``after_update`` once per optimizer update.
    """

    prior_pass = "support"  # reads log P only: the prior runs where P(x) > 0

    def __init__(
        self,
        divergence: str = "js",
        baseline_window: int = 1024,
        max_log_ratio: float | None = None,
    ) -> None:
        if divergence not in PSEUDO_REWARDS:
            raise ValueError(f"unknown divergence {divergence!r}; valid: {', '.join(DIVERGENCES)}")
        check_clip(divergence, max_log_ratio)
        self.divergence = divergence
        self.max_log_ratio = max_log_ratio
        self.baseline = MovingBaseline(baseline_window)
        clip = f", log t ≤ {max_log_ratio:g}" if max_log_ratio is not None else ""
        self.name = f"f-dpg[{divergence}{clip}]"

    def __repr__(self) -> str:
        return (
            f"FDPG(divergence={self.divergence!r}, baseline_window={self.baseline.window}, "
            f"max_log_ratio={self.max_log_ratio})"
        )

    @property
    def refuses_zero_target(self) -> bool:
        return self.divergence == "reverse_kl" and self.max_log_ratio is None

    def check_target(self, target: Target) -> None:
        """Refuse, before any sampling, a target whose P can be 0 when the divergence would be ∞."""
        constraints = getattr(target, "constraints", ())
        if self.refuses_zero_target and constraints:
            names = ", ".join(repr(c.scorer.name) for c in constraints)
            raise InfiniteDivergenceError(
                f"{self.name}: the target has pointwise constraints ({names}), so P(x) = 0 for the "
                "sequences that violate them, and reverse KL(π‖p) is infinite wherever π gives them "
                "mass (it has no gradient to follow). Use reverse_kl with a reward tilt or a "
                "distributional target, choose forward_kl, js or tv, or set "
                "training.f_dpg.max_log_ratio (capped reverse KL, see objectives/f_divergence.py)."
            )

    def log_ratio(self, batch: Batch, log_pi: torch.Tensor) -> torch.Tensor:
        """log t = log π − log p = log π − log P + log Z (detached, float64; +inf where P = 0)."""
        if not math.isfinite(batch.log_z):
            raise ValueError(f"{self.name} needs a finite estimate of log Z, got {batch.log_z}")
        return log_pi.detach().double().cpu() - batch.log_target + batch.log_z

    def pseudo_rewards(self, batch: Batch, log_pi: torch.Tensor) -> torch.Tensor:
        """R = −f′(π/p) for each sample (detached, float64, always finite)."""
        log_t = self.log_ratio(batch, log_pi)
        if self.max_log_ratio is not None:
            log_t = log_t.clamp(max=self.max_log_ratio)
        elif self.refuses_zero_target and (zero := batch.log_target == float("-inf")).any():
            raise InfiniteDivergenceError(
                f"{self.name}: {int(zero.sum())} of {len(batch)} samples have P(x) = 0, where reverse "
                "KL(π‖p) is infinite; use a target with P > 0 everywhere (a reward tilt) or set "
                "training.f_dpg.max_log_ratio (see objectives/f_divergence.py)"
            )
        return PSEUDO_REWARDS[self.divergence](log_t)

    def per_sample_loss(self, batch: Batch, out: PolicyOutput) -> torch.Tensor:
        """−(π/q)·(R − B)·log π; records (π/q, R) for the baseline's next update."""
        log_pi = out.log_prob
        reward = self.pseudo_rewards(batch, log_pi)
        log_w = log_pi.detach().double().cpu() - batch.log_q  # importance ratio π/q, detached
        advantage = torch.exp(log_w) * (reward - self.baseline.value)
        self.baseline.observe(log_w, reward)
        return -advantage.to(log_pi) * log_pi

    def after_update(self) -> None:
        """Fold the pseudo-rewards seen since the last optimizer update into the baseline."""
        self.baseline.commit()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.baseline.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.baseline.load_state_dict(state)
