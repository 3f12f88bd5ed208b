"""From a corpus to scored, packed blocks (Korbak et al. 2023): split documents into segments
(lines of code, sentences of text), score each segment with a misalignment scorer, let every
token inherit its segment's score, and pack the token stream into fixed-length blocks with the
scores aligned token for token.

Filtering (drop documents whose mean segment score exceeds the threshold) and conditional
training (prefix each segment with <|good|> or <|bad|>) are transformations of this data.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from bayesalign.scorers import Scorer, checked_scores
from bayesalign.scorers.code import source_lines

GOOD, BAD = "<|good|>", "<|bad|>"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def segments(text: str, unit: str) -> list[str]:
    """``lines`` (each keeps its line break; split as Python source is, at \\n, \\r\\n and \\r
    only), ``sentences`` (each keeps the space after it) or ``documents`` (the text whole), so
    that "".join(segments) == text: packing the segments back gives the document."""
    if unit == "documents":
        return [text] if text else []
    if unit == "lines":
        return source_lines(text)
    if unit == "sentences":
        parts, start = [], 0
        for match in _SENTENCE_END.finditer(text):
            parts.append(text[start : match.end()])
            start = match.end()
        if start < len(text):
            parts.append(text[start:])
        return parts
    raise ValueError(f"unknown segment unit {unit!r}; valid: lines, sentences, documents")


@runtime_checkable
class SegmentScorer(Protocol):
    """A scorer that must see a segment in its document: it scores all segments of one
    document at once (PEP 8 lines, whose violations depend on the lines around them)."""

    name: str

    def score_segments(self, segments: Sequence[str]) -> torch.Tensor:
        """One score per segment of one document, ``"".join(segments)`` being the document."""
        ...


def score_document(scorer: Scorer, parts: Sequence[str]) -> list[float]:
    """The scores of a document's segments: in one call on the whole document when the scorer
    is a :class:`SegmentScorer`, else each segment scored as a text of its own."""
    if not parts:
        return []
    if not isinstance(scorer, SegmentScorer):
        return checked_scores(scorer, parts, None).tolist()
    scores = torch.as_tensor(scorer.score_segments(parts), dtype=torch.float64)
    if scores.shape != (len(parts),) or not torch.isfinite(scores).all():
        raise ValueError(
            f"scorer {scorer.name!r} must return one finite score per segment; got {scores.tolist()} "
            f"for {len(parts)} segments"
        )
    return scores.tolist()


def kept_documents(document_scores: Sequence[Sequence[float]], threshold: float) -> list[int]:
    """Filtering: the indices of documents whose mean segment score is at most ``threshold``."""
    return [i for i, s in enumerate(document_scores) if s and sum(s) / len(s) <= threshold]


def control_prefixes(
    scores: Sequence[float], threshold: float, drop: float, generator: torch.Generator
) -> list[str]:
    """Conditional training: <|good|> for a segment with s ≤ threshold, <|bad|> above it, and
    with probability ``drop`` no token at all (so the model also learns unconditionally)."""
    if not 0 <= drop <= 1:
        raise ValueError(f"the drop fraction must be in [0, 1], got {drop}")
    dropped = torch.rand(len(scores), generator=generator) < drop
    return [
        "" if d else (GOOD if s <= threshold else BAD) for s, d in zip(scores, dropped.tolist(), strict=True)
    ]


@dataclass
class TokenStream:
    """Token ids of a run of segments and, for each token, the score of its segment."""

    ids: list[int]
    scores: list[float]


def encode_segments(
    texts: Sequence[str],
    scores: Sequence[float],
    tokenizer,
    prefixes: Sequence[str] | None = None,
) -> TokenStream:
    """Tokenise each segment (after its control prefix, if any) on its own, so that no token
    straddles two segments and each token's score is unambiguous; a prefix's token takes the
    score of the segment it announces."""
    if len(texts) != len(scores) or (prefixes is not None and len(prefixes) != len(texts)):
        raise ValueError("one score (and one prefix) per segment")
    ids: list[int] = []
    token_scores: list[float] = []
    for i, (text, score) in enumerate(zip(texts, scores, strict=True)):
        piece = tokenizer((prefixes[i] if prefixes else "") + text, add_special_tokens=False)["input_ids"]
        ids += piece
        token_scores += [float(score)] * len(piece)
    return TokenStream(ids, token_scores)


def pack(stream: TokenStream, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Consecutive blocks of ``block_size`` tokens [N, block_size] and their scores; the last,
    partial block is dropped (as in GPT-style packing)."""
    n = len(stream.ids) // block_size
    if n == 0:
        raise ValueError(f"{len(stream.ids)} tokens do not fill one block of {block_size}")
    ids = torch.tensor(stream.ids[: n * block_size], dtype=torch.long).view(n, block_size)
    scores = torch.tensor(stream.scores[: n * block_size], dtype=torch.float32).view(n, block_size)
    return ids, scores


def pack_documents(
    documents: Sequence[TokenStream], block_size: int, eos: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Blocks that start where documents start: each document, after an EOS, fills blocks of its
    own (a long one continues into the next); the rest of its last block is padding, whose score
    is NaN (no label is learned there). Sampling starts with EOS at position 0, as every document
    does here; with :func:`pack`, EOS at position 0 is rare in training (a block starts there by
    chance), and the model's next-token distribution after it is then barely trained."""
    ids: list[int] = []
    scores: list[float] = []
    for doc in documents:
        ids += [eos] + doc.ids
        scores += [0.0] + doc.scores
        pad = -len(ids) % block_size
        ids += [eos] * pad
        scores += [float("nan")] * pad
    if not ids:
        raise ValueError("no document to pack")
    n = len(ids) // block_size
    return (
        torch.tensor(ids, dtype=torch.long).view(n, block_size),
        torch.tensor(scores, dtype=torch.float32).view(n, block_size),
    )


def add_control_tokens(module, tokenizer) -> tuple[int, int]:
    """Add <|good|> and <|bad|> as special tokens; their new embedding rows (input, and output
    if untied) start at the mean of the existing rows, so they begin as an "average token"
    rather than as noise. Returns their ids."""
    tokenizer.add_special_tokens({"additional_special_tokens": [GOOD, BAD]})
    module.resize_token_embeddings(len(tokenizer))
    return reset_control_embeddings(module, tokenizer)


def reset_control_embeddings(module, tokenizer) -> tuple[int, int]:
    """Set the embedding rows (input, and output if untied) of <|good|> and <|bad|> to the mean
    of the other rows: for tokens just added, and for a model trained without them (an MLE
    checkpoint continued with conditional training), whose rows are still their random init.
    Returns their ids."""
    ids = tokenizer.convert_tokens_to_ids([GOOD, BAD])
    if tokenizer.unk_token_id in ids or None in ids:
        raise ValueError(f"the tokenizer has no {GOOD} and {BAD} tokens")
    embeddings = [module.get_input_embeddings()]
    output = module.get_output_embeddings()
    if output is not None and output.weight is not embeddings[0].weight:  # untied
        embeddings.append(output)
    others = torch.ones(embeddings[0].weight.shape[0], dtype=torch.bool)
    others[ids] = False
    with torch.no_grad():
        for embedding in embeddings:
            embedding.weight[ids] = embedding.weight[others].mean(0)
    return ids[0], ids[1]
