"""A twisted prior: π(v | x<t) ∝ a(v | x<t) · σ(u_θ(x<t))[v], the prior a kept exactly and a learned
twist σ(u_θ) ∈ (0, 1) per next token.

Why this form: the posterior p(x) ∝ a(x)·b(x) of a target whose evidence b lies in [0, 1] factors
token by token as p(v | x<t) = a(v | x<t) · Q(x<t v) / V(x<t), with Q(y) = E_a[b | prefix y] the
probability, under a, that a sequence starting with y satisfies b, and V(x<t) = Σ_v a(v | x<t)
Q(x<t v). So σ(u) = Q gives π = p exactly, and Q can be fitted on samples of a without
importance weights (twist_fit.py). The prior's part never moves, which a fine-tuned
π has to learn to keep.

`TwistedModule` is a `torch.nn.Module` with the interface of a decoder-only HF model that
`LanguageModel` and the decoding loop use (forward with a KV cache, ``logits_to_keep``,
``save_pretrained``), so a `LanguageModel` around it samples, scores, saves and loads like any
other. Its logits are log a + log σ(u) (normalised by the caller's log-softmax). The twist
network u_θ is a trainable copy of a's trunk (``base_model``, optionally with LoRA) with a new head
(`VocabularyHead` or `EmbeddingHead`), initialised to a constant so that π = a at the start.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from bayesalign.decoding import cache_key

MARKER = "twisted.json"  # a folder with this file holds a TwistedModule


def kv_cache(out) -> object:
    """A forward's KV cache, under whichever name this transformers release gives it."""
    return out[cache_key(out)]


@functools.cache
def _cache_keyword(forward: Callable) -> str:
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def cache_argument(module: torch.nn.Module, cache: object) -> dict:
    """``cache`` as the keyword ``module.forward`` takes it by (see `cache_key`); {} for None.
    Looked up once per model class: it is asked at every decoding step."""
    if cache is None:
        return {}
    return {_cache_keyword(type(module).forward): cache}


class PairCache:
    """The prior's and the twist network's KV caches, kept and reordered together."""

    def __init__(self, prior, twist) -> None:
        self.prior, self.twist = prior, twist

    def reorder_cache(self, keep: torch.Tensor) -> None:
        self.prior.reorder_cache(keep)
        self.twist.reorder_cache(keep)


class VocabularyHead(torch.nn.Module):
    """u = W h + c, one free row per vocabulary token (a token never drawn keeps u = c)."""

    kind = "vocabulary"

    def __init__(self, hidden: int, embedding: torch.Tensor) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(hidden, embedding.shape[0]).to(embedding.dtype)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    @property
    def bias(self) -> torch.nn.Parameter:
        return self.linear.bias

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden)

    def at(self, hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """u at the given token of each position only: [B, T] from hidden [B, T, H]."""
        return (hidden * self.linear.weight[tokens]).sum(-1) + self.linear.bias[tokens]


class EmbeddingHead(torch.nn.Module):
    """u[v] = (A h)·e_v + c[v] with e_v the prior's frozen output embedding: tokens the prior
    embeds alike get alike twists, so what is learnt from drawn tokens carries to similar ones
    never drawn (A is H × H; the embedding is the prior's, not saved with the head)."""

    kind = "embedding"

    def __init__(self, hidden: int, embedding: torch.Tensor) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(hidden, embedding.shape[1], bias=False).to(embedding.dtype)
        torch.nn.init.zeros_(self.proj.weight)
        self.bias = torch.nn.Parameter(torch.zeros(embedding.shape[0], dtype=embedding.dtype))
        self.register_buffer("embedding", embedding.detach(), persistent=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.proj(hidden) @ self.embedding.T + self.bias

    def at(self, hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return (self.proj(hidden) * self.embedding[tokens]).sum(-1) + self.bias[tokens]


HEADS = {h.kind: h for h in (VocabularyHead, EmbeddingHead)}


def make_head(kind: str, prior: PreTrainedModel) -> VocabularyHead | EmbeddingHead:
    if kind not in HEADS:
        raise ValueError(f"unknown twist head {kind!r}; valid: {', '.join(HEADS)}")
    embedding = prior.get_output_embeddings().weight
    return HEADS[kind](prior.config.get_text_config().hidden_size, embedding)


def trunk_of(model: torch.nn.Module) -> torch.nn.Module:
    """The decoder stack without its LM head (through a peft wrapper: LoRA layers are in it)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.base_model


TRUNKS = ("copy", "prior")  # the twist's own trainable copy of a's trunk, or a's frozen trunk itself


class TwistedModule(torch.nn.Module):
    """log a + log σ(u_θ) as next-token logits; a frozen, u_θ = head(twist trunk). With ``twist``
    None the head reads the prior's own last hidden states (trunk ``prior``): u_θ is then a
    probe of a's representation, only the head trains, and π costs one forward of a plus the head."""

    def __init__(
        self, prior: PreTrainedModel, twist: torch.nn.Module | None, head: VocabularyHead | EmbeddingHead
    ) -> None:
        super().__init__()
        if getattr(prior.config, "is_encoder_decoder", False):
            raise ValueError("a twisted prior needs a decoder-only model")
        self.prior, self.twist, self.head = prior, twist, head
        self.prior.requires_grad_(False)
        self.config = prior.config

    @property
    def trunk(self) -> str:
        return "prior" if self.twist is None else "copy"

    @classmethod
    def around(
        cls,
        prior: PreTrainedModel,
        *,
        head: str = "vocabulary",
        lora: dict | None = None,
        trunk: str = "copy",
    ) -> TwistedModule:
        """A twist that starts constant (a zero head, bias 0: π = a) on ``trunk``: ``copy``, a
        trainable copy of the prior (LoRA on it given ``lora``, peft.LoraConfig arguments), or
        ``prior``, the prior's own frozen trunk. objectives/twist.py (`start_at_rate`) moves the bias to
        the first batch's rate."""
        if trunk not in TRUNKS:
            raise ValueError(f"unknown twist trunk {trunk!r}; valid: {', '.join(TRUNKS)}")
        if trunk == "prior":
            if lora is not None:
                raise ValueError("a twist on the prior's own trunk trains its head only: no LoRA")
            return cls(prior, None, make_head(head, prior))
        twist = copy.deepcopy(prior).requires_grad_(lora is None)
        if lora is not None:
            from peft import LoraConfig, get_peft_model

            twist = get_peft_model(twist, LoraConfig(task_type="CAUSAL_LM", **lora))
        return cls(prior, twist, make_head(head, prior))  # the prior's weights are shared, frozen

    def trunk_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        *,
        past_key_values=None,
        use_cache: bool = False,
    ) -> tuple[torch.Tensor, object]:
        """The twist trunk's last hidden states [B, L, H] and its KV cache (a twist on the prior's
        own trunk has no trunk of its own: see `forward`)."""
        if self.twist is None:
            raise ValueError("this twist reads the prior's hidden states: it has no trunk of its own")
        trunk = trunk_of(self.twist)
        out = trunk(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=use_cache,
            **cache_argument(trunk, past_key_values),
        )
        return out.last_hidden_state, kv_cache(out) if use_cache else None

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: PairCache | None = None,
        use_cache: bool = False,
        logits_to_keep: int = 0,
        output_hidden_states: bool = False,
        past_key_values: PairCache | None = None,
    ) -> CausalLMOutputWithPast:
        """The HF decoder forward the library calls (models.py, decoding.py); the KV cache comes
        back under the name this transformers release uses (see `kv_cache`) and is taken by either."""
        pair = cache if cache is not None else past_key_values
        shared = self.twist is None  # the head reads the prior's hidden states; one cache
        common = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}
        with torch.no_grad():
            prior_cache = pair if shared else (pair.prior if pair is not None else None)
            prior = self.prior(
                **common,
                use_cache=use_cache,
                logits_to_keep=logits_to_keep,
                output_hidden_states=shared,
                **cache_argument(self.prior, prior_cache),
            )
        if shared:
            hidden, twist_cache = prior.hidden_states[-1], None
        else:
            hidden, twist_cache = self.trunk_states(
                **common, past_key_values=pair.twist if pair is not None else None, use_cache=use_cache
            )
        u = self.head(hidden[:, -logits_to_keep:] if logits_to_keep else hidden)
        logits = torch.log_softmax(prior.logits.float(), -1) + torch.nn.functional.logsigmoid(u.float())
        out = CausalLMOutputWithPast(logits=logits, hidden_states=(hidden,) if output_hidden_states else None)
        if use_cache:
            names = {f.name for f in dataclasses.fields(CausalLMOutputWithPast)}
            cache_out = kv_cache(prior) if shared else PairCache(kv_cache(prior), twist_cache)
            out["cache" if "cache" in names else "past_key_values"] = cache_out
        return out

    def prior_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, keep: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The prior's next-token logits at the last ``keep`` positions and the twist's input
        states [B, L, H] there and before (the prior's own, detached, for trunk ``prior``; the
        twist trunk's, with their graph, for ``copy``)."""
        shared = self.twist is None
        with torch.no_grad():
            out = self.prior(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                logits_to_keep=keep,
                output_hidden_states=shared,
            )
        if shared:
            return out.logits, out.hidden_states[-1]
        return out.logits, self.trunk_states(input_ids, attention_mask, position_ids)[0]

    def save_pretrained(self, folder: str | Path, **kwargs: object) -> None:
        """prior/ and twist/ as HF model folders (safetensors; LoRA merged), head.safetensors,
        twisted.json (the head's kind)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.prior.save_pretrained(folder / "prior", safe_serialization=True)
        if self.twist is not None:
            twist = self.twist
            if hasattr(twist, "merge_and_unload"):
                twist = copy.deepcopy(twist).merge_and_unload()
            twist.save_pretrained(folder / "twist", safe_serialization=True)
        save_file({k: v.contiguous() for k, v in self.head.state_dict().items()}, folder / "head.safetensors")
        marker = {"format": 1, "head": self.head.kind, "trunk": self.trunk}
        (folder / MARKER).write_text(json.dumps(marker) + "\n")

    @classmethod
    def from_folder(
        cls, folder: str | Path, *, dtype: torch.dtype = torch.float32, **kwargs
    ) -> TwistedModule:
        """Load what `save_pretrained` wrote; ``kwargs`` go to each part's ``from_pretrained``."""
        folder = Path(folder)
        marker = json.loads((folder / MARKER).read_text())

        def load(name: str) -> PreTrainedModel:
            path = folder / name
            return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=True, **kwargs)

        prior = load("prior")
        twist = None if marker.get("trunk", "copy") == "prior" else load("twist").requires_grad_(False)
        head = make_head(marker["head"], prior)
        head.load_state_dict(load_file(folder / "head.safetensors"))
        return cls(prior, twist, head)


def is_twisted_folder(name_or_path: str | Path) -> bool:
    return (Path(name_or_path) / MARKER).is_file()
