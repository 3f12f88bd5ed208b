"""Any local Hugging Face sequence classifier as a scorer: the probability of one label."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from bayesalign.scorers.base import ScorerError


@dataclass(frozen=True)
class ClassifierScorer:
    """s(x) = p(label | x) under an AutoModelForSequenceClassification loaded from ``path``
    (safetensors weights; remote code only if ``trust_remote_code``). With ``threshold``,
    b(x) = 1 iff that probability is at least the threshold. ``label`` is a label name of the
    model's config (id2label) or an index. ``activation`` auto takes a sigmoid per label for a
    multi-label model (config.problem_type) and a softmax over labels otherwise."""

    path: str
    label: str | int
    threshold: float | None = None
    batch_size: int = 64
    max_length: int = 512
    trust_remote_code: bool = False
    activation: Literal["auto", "softmax", "sigmoid"] = "auto"
    name: str = "classifier"
    boolean: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if not Path(self.path).exists():
            raise ScorerError(f"scorer {self.name!r}: classifier folder {self.path} does not exist")
        model = AutoModelForSequenceClassification.from_pretrained(
            self.path, use_safetensors=True, trust_remote_code=self.trust_remote_code
        ).eval()
        tokenizer = AutoTokenizer.from_pretrained(self.path, trust_remote_code=self.trust_remote_code)
        labels = {name: int(i) for i, name in model.config.id2label.items()}
        index = self.label if isinstance(self.label, int) else labels.get(self.label)
        if index is None or not 0 <= index < model.config.num_labels:
            raise ScorerError(f"scorer {self.name!r}: label {self.label!r} is not one of {sorted(labels)}")
        if self.threshold is not None and not 0 < self.threshold <= 1:
            raise ValueError(f"scorer {self.name!r}: threshold must be in (0, 1], got {self.threshold}")
        if self.activation not in ("auto", "softmax", "sigmoid"):
            raise ValueError(f"scorer {self.name!r}: activation must be auto, softmax or sigmoid")
        # a multi-label model (toxicity categories, say) scores each label on its own: sigmoid
        multi_label = model.config.problem_type == "multi_label_classification"
        sigmoid = self.activation == "sigmoid" or (self.activation == "auto" and multi_label)
        object.__setattr__(self, "_sigmoid", sigmoid)
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "_tokenizer", tokenizer)
        object.__setattr__(self, "_index", index)
        object.__setattr__(self, "boolean", self.threshold is not None)

    @torch.no_grad()
    def __call__(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> torch.Tensor:
        probs = []
        for start in range(0, len(texts), self.batch_size):
            batch = self._tokenizer(
                list(texts[start : start + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            logits = self._model(**batch).logits.float()
            p = torch.sigmoid(logits) if self._sigmoid else torch.softmax(logits, -1)
            probs.append(p[:, self._index].double())
        p = torch.cat(probs) if probs else torch.zeros(0, dtype=torch.float64)
        return (p >= self.threshold).double() if self.threshold is not None else p
