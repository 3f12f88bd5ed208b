"""Offensive language with alt-profanity-check: a calibrated linear SVM over TF-IDF word counts,
fitted and shipped inside the package (under 1 MB), so it works offline and scores tens of
thousands of texts a second when batched (one text per call is hundreds of times slower).

It is lexical: "That was a fucking brilliant goal!" scores 1.0. Detoxify, the toxicity scorer
of the PHF paper, downloads a pickled checkpoint at run time; its "original" model is also
published as the Hugging Face classifier ``unitary/toxic-bert``, which :func:`toxicity_scorer`
reads from a local folder (safetensors) and scores as Detoxify does, with a sigmoid per label.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from bayesalign.scorers.classifier import ClassifierScorer


@dataclass(frozen=True)
class OffensiveScorer:
    """Probability that x is offensive (a misalignment score: lower is better). With
    ``threshold``, b(x) = 1 iff that probability is below it: as for every constraint in the
    library, b(x) = 1 means the preference (here: not offensive) holds."""

    threshold: float | None = None
    name: str = "offensive"

    def __post_init__(self) -> None:
        if self.threshold is not None and not 0 < self.threshold <= 1:
            raise ValueError(f"scorer {self.name!r}: threshold must be in (0, 1], got {self.threshold}")
        try:
            from profanity_check import predict_prob
        except ImportError as err:
            raise ImportError(
                "the offensive scorer needs alt-profanity-check: pip install 'bayesalign[offensive]'"
            ) from err
        object.__setattr__(self, "_predict_prob", predict_prob)

    @property
    def boolean(self) -> bool:
        return self.threshold is not None

    def __call__(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> torch.Tensor:
        if not texts:  # scikit-learn refuses an empty batch
            return torch.zeros(0, dtype=torch.float64)
        prob = torch.as_tensor(self._predict_prob(list(texts)), dtype=torch.float64)
        return prob if self.threshold is None else (prob < self.threshold).double()


DETOXIFY_MODEL = "unitary/toxic-bert"


def toxicity_scorer(
    path: str,
    label: str = "toxic",
    threshold: float | None = None,
    batch_size: int = 64,
    name: str = "toxicity",
):
    """Detoxify's toxicity p(label | x) from ``unitary/toxic-bert`` saved in the folder ``path``;
    its labels are toxic, severe_toxic, obscene, threat, insult and identity_hate. No network is
    used: a missing folder is an error that says how to fetch the model where a hub is reachable."""
    if not (Path(path) / "config.json").exists():
        raise ValueError(
            f"scorer {name!r}: no model at {path}. Detoxify's model is {DETOXIFY_MODEL}; on a machine with "
            'a hub, save it with: python -c "from transformers import AutoModelForSequenceClassification '
            f"as M, AutoTokenizer as T; M.from_pretrained('{DETOXIFY_MODEL}').save_pretrained('{path}'); "
            f"T.from_pretrained('{DETOXIFY_MODEL}').save_pretrained('{path}')\" and copy {path} here"
        )
    return ClassifierScorer(path, label, threshold, batch_size, activation="sigmoid", name=name)
