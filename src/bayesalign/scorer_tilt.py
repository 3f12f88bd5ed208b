"""The prior tilted token by token by the constraint's own scorer:
π_w(v | x<t) ∝ a(v | x<t) · exp(w_k · φ(x<t, v)), a handful of weights w fitted to p (tilt_fit.py).

Why: p(v | x<t) = a(v | x<t) · h(x<t v) / h(x<t), with h(y) = P_a(b = 1 | prefix y), so the whole
gap between a and p is the twist log h. A fine-tuned π has to learn it from a few hundred
posterior samples and stops far from p on the demo (docs/demo-recipe.md); the scorer that defines
b already knows much of it, for every word, also for words no sample holds. φ asks it:
- s⁺(v), s⁻(v): the scorer (its threshold removed) on the token's text alone, for every token;
- Δ⁺, Δ⁻ with Δ = s(x<t ⊕ v) − s(x<t): how appending v moves the score of the text so far, for
  the ``top`` likeliest tokens under a (0 for the others): it sees negation and intensifiers;
- up, down: whether appending v turns the verdict b on the text so far from 0 to 1 (or 1 to 0),
  for the same candidates;
- end: v is EOS while the text so far fails b (the sequence would end unsatisfied).
Each bucket k of positions, by the tokens still to come (``edges``), has its own weights w_k:
a dozen tokens before the end a crossing says less than near it.

The last position needs no weights: there h(x<T v) = b(x<T v) exactly, so with ``final`` = K > 0
π takes p's own last step, π(v | x<T) ∝ a(v | x<T)·exp(FINAL·b(x<T ⊕ v)), the verdict read for
a's K likeliest tokens and for every token the scorer reacts to on its own (the support: a rare
"wonderful" can end a text on the right side); the other tokens keep the verdict on x<T, which
is exact for EOS and for any token that changes nothing. FINAL is large but finite: a token
wrongly assumed to keep the verdict costs log π −FINAL instead of an infinite KL. On the demo
this step is worth 0.065 ± 0.025 nats of KL(p‖π) per held-out sample over the fitted weights
(docs/demo-recipe.md).

π_w is exact and normalised (the normaliser runs over the whole vocabulary); it needs the scorer
on partial texts at every step, so it is a decoding-time model: `tilted` hands it to a
`LanguageModel` (decoding.py calls it at every step, scoring at every position), and it is saved
as ``tilt.json`` + ``tilt.safetensors`` beside the base model, reloaded with the target's scorer.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import PreTrainedTokenizerBase

from bayesalign.models import LanguageModel
from bayesalign.scorers import Scorer
from bayesalign.scorers.parallel import ParallelScorer

SHARPNESS = (4.0, 16.0)  # the soft verdicts' slopes (see `ScorerTilt.candidates`)
CONTEXT = ("delta+", "delta-", "up", "down", *(f"soft{k:g}" for k in SHARPNESS))  # top candidates only
FEATURES = ("s+", "s-", *CONTEXT, "end")
IN_CONTEXT = slice(2, 2 + len(CONTEXT))  # the context features' columns of the weights
FINAL = 10.0  # the last step's weight on the verdict: e^-10 stands in for p's zero (see the module)
BROKEN = "\ufffd"  # what a decoder writes for a character whose bytes are split between tokens
MARKER = "tilt.json"  # a folder with this file holds a scorer tilt beside its base model


class TiltError(ValueError):
    """A tilt that cannot be built, fitted or loaded as asked."""


def _given(scorer: Scorer) -> Scorer:
    """The factory of a `ParallelScorer` worker: the (pickled) scorer itself."""
    return scorer


@dataclass(frozen=True)
class Negated:
    """−s: the score of a constraint that holds *below* its threshold (e.g. offensiveness), turned
    so that b = 1 iff the score is above the (negated) threshold, as every feature reads it."""

    scorer: Scorer

    @property
    def name(self) -> str:
        return self.scorer.name

    def __call__(self, texts: list[str], contexts: list[str] | None = None) -> torch.Tensor:
        return -self.scorer(texts, contexts)


def real_valued(scorer: Scorer, texts: list[str]) -> tuple[Scorer, float, torch.Tensor]:
    """The constraint's score with its threshold removed, oriented so that b = 1 iff score >
    threshold; that threshold; and the score of each of ``texts``. A scorer without a threshold
    (a word or regex match, already 0/1) is its own score, split at 0.5. The orientation is read
    off the constraint itself, by its verdict on the highest- and lowest-scoring text (two
    calls): scorers differ (VADER holds above its threshold, offensiveness below)."""
    threshold = getattr(scorer, "threshold", None)
    if threshold is None:
        return scorer, 0.5, scorer(texts)
    raw = dataclasses.replace(scorer, threshold=None)
    s = raw(texts)
    verdict = scorer([texts[int(s.argmax())], texts[int(s.argmin())]]).tolist()
    high, low = float(s.max()), float(s.min())
    above, below = (
        [float(high > threshold), float(low > threshold)],
        [float(high < threshold), float(low < threshold)],
    )
    if verdict == below and verdict != above:
        return Negated(raw), -float(threshold), -s
    return raw, float(threshold), s


@dataclass
class Candidates:
    """What the tilt needs at a batch of positions: the top candidates' ids [n, K] and their
    context features [n, K, len(CONTEXT)], and whether the text so far fails b [n]."""

    top: torch.Tensor
    context: torch.Tensor
    unsatisfied: torch.Tensor


class ScorerTilt:
    """The tilt's features and weights: ``weights`` [buckets, len(FEATURES)], bucket k holding
    positions with at least ``edges[k]`` tokens still to come out of ``horizon`` (max_new_tokens).
    ``workers`` > 0 runs the scorer in that many processes (a `ParallelScorer`, which also
    caches its scores): it is most of the tilt's cost."""

    def __init__(
        self,
        scorer: Scorer,
        tokenizer: PreTrainedTokenizerBase,
        vocab: int,
        *,
        horizon: int,
        top: int = 32,
        edges: tuple[int, ...] = (0,),
        weights: torch.Tensor | None = None,
        workers: int = 0,
        final: int = 0,
    ) -> None:
        if top < 0 or horizon < 1 or final < 0:
            raise TiltError(
                f"tilt: top and final must be >= 0 and horizon >= 1, "
                f"got top={top}, final={final}, horizon={horizon}"
            )
        if not edges or edges[0] != 0 or list(edges) != sorted(set(edges)):
            raise TiltError(f"tilt: edges must rise strictly from 0, got {list(edges)}")
        texts = tokenizer.batch_decode([[v] for v in range(vocab)], skip_special_tokens=True)
        self.pieces = texts  # what each token appends to a text, where `appends` holds
        self.appends = _appends(tokenizer, texts)
        self.scorer, self.threshold, s = real_valued(scorer, texts)
        self.scorer_name = scorer.name
        if workers:  # the scorer runs `top` + 1 times per position: spread it over processes
            self.scorer = ParallelScorer(functools.partial(_given, self.scorer), workers=workers, chunk=256)
        self.tokenizer, self.vocab, self.horizon = tokenizer, vocab, horizon
        self.top, self.edges, self.final = min(top, vocab), tuple(edges), min(final, vocab)
        self.eos = tokenizer.eos_token_id
        self.weights = torch.zeros(len(edges), len(FEATURES)) if weights is None else weights.float()
        if self.weights.shape != (len(edges), len(FEATURES)):
            raise TiltError(
                f"tilt: weights of shape {tuple(self.weights.shape)}, expected {(len(edges), len(FEATURES))}"
            )
        s = s.float()
        self.token_features = torch.stack([s.clamp(min=0), s.clamp(max=0)], 1)  # [V, 2]
        self.support = s != 0  # [V]: the tokens the scorer reacts to on their own

    # -- features -------------------------------------------------------------------------------
    def bucket(self, step: torch.Tensor) -> torch.Tensor:
        """The bucket of each position (0-based step in the continuation)."""
        to_go = self.horizon - 1 - step
        return torch.bucketize(to_go, torch.tensor(self.edges), right=True) - 1

    def candidates(self, prefixes: list[list[int]], log_base: torch.Tensor) -> Candidates:
        """The top candidates under the base distribution ``log_base`` [n, V] after each prefix
        (generated token ids, no prompt), with the scorer on prefix ⊕ candidate."""
        n, k = len(prefixes), self.top
        top = log_base.topk(k, dim=-1).indices.cpu() if k else torch.zeros(n, 0, dtype=torch.long)
        texts = self.tokenizer.batch_decode(prefixes, skip_special_tokens=True)
        before = self.scorer(texts).float()
        rows = torch.arange(n).repeat_interleave(k).tolist()
        after = self.scorer(self._extended(prefixes, texts, rows, top.flatten().tolist())).float()
        after = after.view(n, k)
        delta = after - before[:, None]
        b_after, b_before = after > self.threshold, (before > self.threshold)[:, None]
        up, down = (b_after & ~b_before).float(), (~b_after & b_before).float()
        soft = [self._soft(after, k) - self._soft(before[:, None], k) for k in SHARPNESS]
        context = torch.stack([delta.clamp(min=0), delta.clamp(max=0), up, down, *soft], dim=-1)
        return Candidates(top, context, ~b_before[:, 0])

    def is_final(self, step: int) -> bool:
        """Whether ``step`` (0-based) is the last one, where π takes p's own step (``final``)."""
        return self.final > 0 and step == self.horizon - 1

    def final_tilt(self, prefixes: list[list[int]], log_base: torch.Tensor) -> torch.Tensor:
        """FINAL·b(x<T ⊕ v) [n, V] at the last position: the verdict on each prefix extended by
        each of the ``final`` likeliest tokens under ``log_base`` [n, V] and each token of the
        support, the prefix's own verdict for the other tokens."""
        read = self.support.expand(len(prefixes), -1).clone()
        read.scatter_(1, log_base.topk(self.final, dim=-1).indices.cpu(), True)
        row, token = read.nonzero(as_tuple=True)
        texts = self.tokenizer.batch_decode(prefixes, skip_special_tokens=True)
        before = self.scorer(texts)
        after = self.scorer(self._extended(prefixes, texts, row.tolist(), token.tolist()))
        verdict = (before > self.threshold).float()[:, None].expand(len(prefixes), self.vocab).clone()
        verdict[row, token] = (after > self.threshold).float()
        return FINAL * verdict

    def _extended(
        self, prefixes: list[list[int]], texts: list[str], rows: list[int], tokens: list[int]
    ) -> list[str]:
        """The text of prefixes[r] ⊕ v for each (r, v): the prefix's text plus the token's piece
        where the tokenizer appends pieces (`_appends`) and neither holds a broken character (a
        multi-byte character split between tokens), else decoded from the ids (slower: decoding
        costs as much as VADER)."""
        out, redo = [], []
        for i, (r, v) in enumerate(zip(rows, tokens, strict=True)):
            piece = self.pieces[v]
            if self.appends and BROKEN not in texts[r] and BROKEN not in piece:
                out.append(texts[r] + piece)
            else:
                out.append("")
                redo.append(i)
        decoded = self.tokenizer.batch_decode(
            [prefixes[rows[i]] + [tokens[i]] for i in redo], skip_special_tokens=True
        )
        for i, text in zip(redo, decoded, strict=True):
            out[i] = text
        return out

    def _soft(self, score: torch.Tensor, k: float) -> torch.Tensor:
        """log σ(k·(s − threshold)): a verdict that changes smoothly with the score, so that a
        move from far below the threshold counts less than one that nearly crosses it."""
        return torch.nn.functional.logsigmoid(k * (score - self.threshold))

    def tilt_logits(self, cands: Candidates, bucket: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """The additive tilt w_k·φ(x<t, v) [n, V] at each position (differentiable in weights)."""
        w = weights[bucket]  # [n, features]
        tilt = w[:, 0:1] * self.token_features[:, 0] + w[:, 1:2] * self.token_features[:, 1]
        tilt = tilt.scatter_add(1, cands.top, (cands.context * w[:, None, IN_CONTEXT]).sum(-1))
        eos = torch.full((len(w), 1), self.eos)
        return tilt.scatter_add(1, eos, (cands.unsatisfied.float() * w[:, -1])[:, None])

    def __call__(
        self, prefixes: torch.Tensor, mask: torch.Tensor, log_probs: torch.Tensor, step: int
    ) -> torch.Tensor:
        """The tilted next-token log-probabilities [n, V] after ``prefixes`` [n, step] (generated
        ids, ``mask`` marking real tokens) from the base's ``log_probs``: the hook decoding.py
        and `LanguageModel.generated_logits` call."""
        rows = [row[m].tolist() for row, m in zip(prefixes.cpu(), mask.cpu(), strict=True)]
        if self.is_final(step):
            return torch.log_softmax(log_probs + self.final_tilt(rows, log_probs).to(log_probs), dim=-1)
        cands = self.candidates(rows, log_probs)
        bucket = self.bucket(torch.full((len(rows),), step))
        tilt = self.tilt_logits(cands, bucket, self.weights).to(log_probs.device, log_probs.dtype)
        return torch.log_softmax(log_probs + tilt, dim=-1)

    # -- saving ---------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        """``tilt.json`` (the settings and the name of the target's scorer it reads) and
        ``tilt.safetensors`` (the weights) in ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({"weights": self.weights.contiguous()}, str(folder / "tilt.safetensors"))
        settings = {
            "scorer": self.scorer_name,
            "horizon": self.horizon,
            "top": self.top,
            "edges": list(self.edges),
            "final": self.final,
        }
        (folder / MARKER).write_text(json.dumps({**settings, "features": list(FEATURES)}, indent=1) + "\n")

    @classmethod
    def load(
        cls, folder: str | Path, scorers: dict[str, Scorer], tokenizer: PreTrainedTokenizerBase, vocab: int
    ) -> ScorerTilt:
        """The tilt saved in ``folder``, reading the scorer of that name in ``scorers`` (the
        target's): the scorer is code, so it comes from the config, not from the folder."""
        folder = Path(folder)
        settings = json.loads((folder / MARKER).read_text())
        name = settings["scorer"]
        if name not in scorers:
            raise TiltError(
                f"{folder / MARKER}: the tilt reads scorer {name!r}, which the target does not have "
                f"(it has {sorted(scorers)})"
            )
        weights = load_file(str(folder / "tilt.safetensors"))["weights"]
        return cls(
            scorers[name],
            tokenizer,
            vocab,
            horizon=settings["horizon"],
            top=settings["top"],
            edges=tuple(settings["edges"]),
            weights=weights,
            final=settings.get("final", 0),  # tilts saved before it had no exact last step
        )


def _appends(tokenizer: PreTrainedTokenizerBase, pieces: list[str]) -> bool:
    """Whether decoding a prefix with one more token gives the prefix's text plus that token's
    piece (byte-level BPE without clean-up does; SentencePiece, which drops a first piece's
    space, does not), checked on 2,048 pairs of tokens spread over the vocabulary."""
    step = max(1, len(pieces) // 64)
    ids = [v for v in range(0, len(pieces), step) if BROKEN not in pieces[v]][:64]
    prefixes = [[a, b] for a, b in zip(ids, ids[1:] + ids[:1], strict=True)]
    pairs = [(prefix, v) for prefix in prefixes for v in ids[:32]]
    whole = tokenizer.batch_decode([prefix + [v] for prefix, v in pairs], skip_special_tokens=True)
    alone = tokenizer.batch_decode([prefix for prefix, _ in pairs], skip_special_tokens=True)
    return all(w == a + pieces[v] for w, a, (_, v) in zip(whole, alone, pairs, strict=True))


def tilted(base: LanguageModel, tilt: ScorerTilt) -> LanguageModel:
    """A `LanguageModel` that samples and scores π_w: ``base``'s module and tokenizer, shared."""
    return LanguageModel(
        base.module,
        base.tokenizer,
        base.prompt,
        adapters_disabled=base.adapters_disabled,
        chat=base.chat,
        tilt=tilt,
    )
