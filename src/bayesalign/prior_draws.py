"""The prior's draws behind posterior pools (pools.py), cached on disk and extensible.

A posterior pool turns N samples of the prior a into exact samples of the posterior p by
rejection. The prior's draws depend only on the model, the prompt or contexts, the sampling
settings and the seed, so they are cached on disk (`PoolCache`) and shared by every run,
evaluation and method on the same prior; scores are recomputed for each target. Draws come in
seeded chunks, so a pool of 2N extends the pool of N instead of replacing it, and ``workers``
processes can draw chunks side by side (on a CPU, two one-thread processes sample faster than one
two-thread process: decoding a small batch token by token does not keep two threads busy).
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from bayesalign.contexts import group_by_context
from bayesalign.models import LanguageModel
from bayesalign.progress import Status, quiet
from bayesalign.samples import Samples, SamplingParams

CHUNK = 256  # prior samples per seeded chunk (per context: CONTEXT_CHUNK); pools grow by chunks
CONTEXT_CHUNK = 32


class PoolError(ValueError):
    """No posterior pool can be drawn or used: the sampling is not the prior's, or the target's
    log P − log a has no bound, or no sample of the pool has P > 0."""


# -- the prior's draws, cached ---------------------------------------------------------------------
@dataclass
class PriorDraws:
    """N samples of the prior a (ancestral, so token_log_q is log a per token) and, per sample,
    the uniform variate its rejection test uses (fixed with the sample, so a grown pool keeps
    every earlier decision)."""

    samples: Samples
    uniform: torch.Tensor  # [N] float64 in [0, 1)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def log_a(self) -> torch.Tensor:
        return self.samples.token_log_q.sum(-1).double()

    def head(self, n: int) -> PriorDraws:
        return self.select(torch.arange(min(n, len(self))))

    def select(self, rows: torch.Tensor) -> PriorDraws:
        return PriorDraws(self.samples.select(rows), self.uniform[rows])


def model_fingerprint(model: LanguageModel) -> str:
    """sha256 of the base weights (LoRA adapters left out, PEFT's name prefixes removed), so the
    same prior loaded plainly or inside a LoRA policy has one fingerprint."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.module.state_dict().items()):
        if "lora_" in name:
            continue
        name = name.removeprefix("base_model.model.").replace(".base_layer", "")
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def pool_key(prior: LanguageModel, params: SamplingParams, contexts: Sequence[str] | None, seed: int) -> dict:
    """Everything the prior's draws depend on (N excepted: chunks make pools extensible).
    Chat prompts are keyed only when used, so that the pools of plain prompts keep their keys."""
    return ({"prompt_format": "chat"} if prior.chat else {}) | {
        "model": model_fingerprint(prior),
        "vocab_size": len(prior.tokenizer),
        "prompt": prior.prompt if contexts is None else None,
        "contexts": None if contexts is None else list(contexts),
        "sampling": {
            "max_new_tokens": params.max_new_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": params.top_k,
            "banned_tokens": list(params.banned_tokens),
        },
        "seed": seed,
        "chunk": CHUNK if contexts is None else CONTEXT_CHUNK,
    }


def _checksum(path: Path, texts: Path) -> str:
    digest = hashlib.sha256(path.read_bytes())
    digest.update(texts.read_bytes())
    return digest.hexdigest()


class PoolCache:
    """A folder of prior draws, one subfolder per key: ``draws.safetensors`` (ids, masks, per-token
    log a, uniforms), ``texts.jsonl`` and ``meta.json`` (the key, N and a checksum of both
    files). A folder whose meta, key or checksum does not match is redrawn, never trusted."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def folder(self, key: dict) -> Path:
        name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        return self.root / f"pool-{name}"

    def load(self, key: dict) -> tuple[PriorDraws | None, str]:
        """The cached draws for ``key`` (None if absent or invalid) and why."""
        folder = self.folder(key)
        meta_file, tensors, texts = folder / "meta.json", folder / "draws.safetensors", folder / "texts.jsonl"
        if not meta_file.exists():
            return None, "no cached pool"
        try:
            meta = json.loads(meta_file.read_text())
            if meta.get("key") != key:
                return None, f"{folder}: its key does not match the request; redrawing"
            if meta.get("checksum") != _checksum(tensors, texts):
                return None, f"{folder}: its files do not match their checksum (edited?); redrawing"
            t = load_file(tensors)
            rows = [json.loads(line) for line in texts.read_text().splitlines()]
        except (OSError, ValueError, KeyError) as err:
            return None, f"{folder}: unreadable ({err}); redrawing"
        samples = Samples(
            prompt_ids=t["prompt_ids"],
            prompt_mask=t["prompt_mask"],
            ids=t["ids"],
            mask=t["mask"],
            token_log_q=t["token_log_a"],
            texts=[r["text"] for r in rows],
            contexts=None if key["contexts"] is None else [r["context"] for r in rows],
        )
        return PriorDraws(samples, t["uniform"]), f"reused {len(samples)} cached prior samples from {folder}"

    def save(self, key: dict, draws: PriorDraws) -> None:
        folder = self.folder(key)
        folder.mkdir(parents=True, exist_ok=True)
        s = draws.samples
        tensors, texts = folder / "draws.safetensors", folder / "texts.jsonl"
        tmp_tensors, tmp_texts = tensors.with_suffix(".tmp"), texts.with_suffix(".tmp")
        save_file(
            {
                "prompt_ids": s.prompt_ids.contiguous(),
                "prompt_mask": s.prompt_mask.contiguous(),
                "ids": s.ids.contiguous(),
                "mask": s.mask.contiguous(),
                "token_log_a": s.token_log_q.contiguous(),
                "uniform": draws.uniform.contiguous(),
            },
            tmp_tensors,
        )
        contexts = s.contexts or [None] * len(s)
        lines = [json.dumps({"text": t, "context": c}) for t, c in zip(s.texts, contexts, strict=True)]
        tmp_texts.write_text("\n".join(lines) + "\n")
        tmp_tensors.replace(tensors)
        tmp_texts.replace(texts)
        meta = {"key": key, "n": len(s), "checksum": _checksum(tensors, texts)}
        tmp_meta = folder / "meta.tmp"
        tmp_meta.write_text(json.dumps(meta, indent=1))
        tmp_meta.replace(folder / "meta.json")


def _join(parts: list[PriorDraws]) -> PriorDraws:
    if len(parts) == 1:
        return parts[0]
    return PriorDraws(Samples.concat([p.samples for p in parts]), torch.cat([p.uniform for p in parts]))


_WORKER_PRIOR: LanguageModel | None = None  # set once per worker process by _start_worker


def _start_worker(prior: LanguageModel) -> None:
    global _WORKER_PRIOR
    torch.set_num_threads(1)  # the processes share the cores: one thread each
    _WORKER_PRIOR = prior


def _draw_chunk(
    prior: LanguageModel | None,
    k: int,
    params: SamplingParams,
    seed: int,
    chunk: int,
    contexts: Sequence[str] | None,
    batch_size: int | None,
) -> PriorDraws:
    """Chunk k: ``chunk`` samples (per context), from its own generator, so that a chunk is the
    same whichever process draws it and whatever was drawn before it."""
    prior = prior if prior is not None else _WORKER_PRIOR
    generator = torch.Generator().manual_seed(seed * 1_000_003 + k)
    rows = None if contexts is None else [c for c in contexts for _ in range(chunk)]
    n = chunk if rows is None else len(rows)
    samples = prior.sample(n, params, contexts=rows, generator=generator, batch_size=batch_size)
    return PriorDraws(samples, torch.rand(len(samples), generator=generator, dtype=torch.float64))


def _chunks_in_order(
    prior: LanguageModel, ks: range, workers: int, *args: object
) -> Iterator[tuple[int, PriorDraws]]:
    """Chunks ``ks`` in order, drawn here or by ``workers`` spawned processes (each given the
    prior once), which draw ahead while the caller saves the chunks before."""
    if workers < 2 or len(ks) < 2:
        for k in ks:
            yield k, _draw_chunk(prior, k, *args)
        return
    context = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
    with ProcessPoolExecutor(
        min(workers, len(ks)), mp_context=context, initializer=_start_worker, initargs=(prior,)
    ) as pool:
        futures = [pool.submit(_draw_chunk, None, k, *args) for k in ks]
        try:
            for k, future in zip(ks, futures, strict=True):
                yield k, future.result()
        finally:  # an interrupted draw cancels the chunks not yet started
            for future in futures:
                future.cancel()


def draw_prior(
    prior: LanguageModel,
    n: int,
    params: SamplingParams,
    *,
    seed: int = 0,
    contexts: Sequence[str] | None = None,
    batch_size: int | None = None,
    cache: PoolCache | None = None,
    status: Status = quiet,
    workers: int = 0,
) -> tuple[PriorDraws, float]:
    """n samples of the prior (n per context with ``contexts``), from ``cache`` where it holds
    them, drawing only the missing chunks (in ``workers`` processes of one thread each, if 2 or
    more); returns the draws and the seconds spent drawing."""
    if not params.is_ancestral:
        raise PoolError(
            "a posterior pool needs samples of the prior itself: ancestral sampling (temperature 1, "
            "no top-k, top-p or banned tokens)"
        )
    key = pool_key(prior, params, contexts, seed)
    have: PriorDraws | None = None
    if cache is not None:
        have, why = cache.load(key)
        status(why)
        if have is not None and contexts is not None:  # the cache holds texts: give back their rows
            rows = {str(c): c for c in contexts}
            have.samples.contexts = [rows.get(c, c) for c in have.samples.contexts]
    chunk = key["chunk"]
    per_chunk = chunk * (1 if contexts is None else len(contexts))
    chunks_needed = math.ceil(n / chunk)
    done = 0 if have is None else len(have) // per_chunk
    started = time.perf_counter()
    parts = [] if have is None else [have.head(min(done, chunks_needed) * per_chunk)]
    phase = f"drawing prior samples in chunks of {per_chunk}" + (
        f", {workers} processes" if workers > 1 else ""
    )
    ks = range(done, chunks_needed)
    if ks:
        status(phase, done, chunks_needed)
    for k, drawn in _chunks_in_order(prior, ks, workers, params, seed, chunk, contexts, batch_size):
        parts = [_join([*parts, drawn])]
        status(phase, k + 1, chunks_needed)
        if cache is not None:  # after every chunk: an interrupted draw keeps what it drew
            cache.save(key, parts[0])
    seconds = time.perf_counter() - started if chunks_needed > done else 0.0
    draws = parts[0]
    if contexts is None:
        return draws.head(n), seconds
    # ints, not 0-d tensors: torch reads a short list of tensors as one index per dimension
    keep = [i for rows in group_by_context(draws.samples.contexts).values() for i in rows[:n].tolist()]
    return PriorDraws(draws.samples.select(keep), draws.uniform[keep]), seconds
