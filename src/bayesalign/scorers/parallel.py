"""Scoring off the critical path: slow pure-Python scorers (pycodestyle, scrubadub) run in
worker processes, and a cache keyed by (text, context) skips texts already scored (on-policy
samples repeat, and evaluation rescans the same samples)."""

from __future__ import annotations

import multiprocessing
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor

import torch

from bayesalign.scorers.base import Scorer

_WORKER_SCORER: Scorer | None = None  # built once per worker process by _start_worker


def _start_worker(factory: Callable[[], Scorer]) -> None:
    global _WORKER_SCORER
    _WORKER_SCORER = factory()


def _score_in_worker(texts: list[str], contexts: list[str] | None) -> list[float]:
    return _WORKER_SCORER(texts, contexts).tolist()


class ParallelScorer:
    """A scorer built by ``factory`` (a picklable callable, e.g. ``functools.partial(Pep8Scorer,
    boolean=True)``), run in a pool of ``workers`` processes that each build their own copy
    once, behind an LRU cache of ``cache_size`` scores. Same scores, same order, same name and
    kind as the scorer; batches of at most ``chunk`` texts, and ``workers`` = 0, score in this
    process (cache only)."""

    def __init__(
        self, factory: Callable[[], Scorer], workers: int = 2, cache_size: int = 100_000, chunk: int = 64
    ) -> None:
        if workers < 0 or cache_size < 0 or chunk < 1:
            raise ValueError("workers and cache_size must be >= 0 and chunk >= 1")
        self.scorer = factory()
        self.name, self.boolean = self.scorer.name, self.scorer.boolean
        self.cache_size, self.chunk = cache_size, chunk
        self._cache: OrderedDict[tuple[str, str | None], float] = OrderedDict()
        self._pool = None
        if workers:
            context = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
            self._pool = ProcessPoolExecutor(
                workers, mp_context=context, initializer=_start_worker, initargs=(factory,)
            )
        self.hits = 0

    def __call__(self, texts: Sequence[str], contexts: Sequence[str] | None = None) -> torch.Tensor:
        keys = [(t, None if contexts is None else contexts[i]) for i, t in enumerate(texts)]
        scores: dict[tuple[str, str | None], float] = {}
        for key in keys:
            if key in self._cache:
                scores[key] = self._cache[key]
                self._cache.move_to_end(key)  # least recently used goes first
                self.hits += 1
        missing = list(dict.fromkeys(k for k in keys if k not in scores))
        if missing:
            new_texts = [t for t, _ in missing]
            new_contexts = None if contexts is None else [c for _, c in missing]
            for key, score in zip(missing, self._score(new_texts, new_contexts), strict=True):
                scores[key] = score
                self._remember(key, score)
        return torch.tensor([scores[k] for k in keys], dtype=torch.float64)

    def _score(self, texts: list[str], contexts: list[str] | None) -> list[float]:
        if self._pool is None or len(texts) <= self.chunk:
            return self.scorer(texts, contexts).tolist()
        futures = [
            self._pool.submit(
                _score_in_worker,
                texts[s : s + self.chunk],
                None if contexts is None else contexts[s : s + self.chunk],
            )
            for s in range(0, len(texts), self.chunk)
        ]
        return [score for future in futures for score in future.result()]

    def _remember(self, key: tuple[str, str | None], score: float) -> None:
        if not self.cache_size:
            return
        self._cache[key] = score
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
