"""π's samples from a vLLM engine (``sampling.backend: vllm``, ``pip install 'bayesalign[vllm]'``).

UNTESTED: it was written on a machine without a GPU or vLLM. Only the refusals (no vllm, no GPU,
LoRA or encoder-decoder policies) are tested. What it relies on, to check on a GPU machine:

- the engine samples from π with π's current weights: they are copied in after every optimizer
  update (:meth:`VLLMSampler.sync`) through ``LLM.apply_model`` and the model's ``load_weights``;
- log q is the log-probability vLLM returns for each sampled token, after temperature and
  top-k/top-p (``logprobs_mode="processed_logprobs"``), as importance weights need. vLLM's kernels
  differ numerically from the HF forward that computes log π, so on-policy π/q is ≈ 1, not = 1;
- each draw is seeded from the shard's generator (one vLLM seed per request), so draws repeat.
"""

from __future__ import annotations

import importlib.util
import tempfile
from collections.abc import Sequence

import torch

from bayesalign.models import LanguageModel
from bayesalign.samples import Samples, SamplingParams


def require_vllm() -> None:
    """Fail before any work when the vllm backend cannot run here."""
    if importlib.util.find_spec("vllm") is None:
        raise ImportError(
            "sampling.backend: vllm needs the vllm package: pip install 'bayesalign[vllm]' "
            "(on a CUDA machine), or set sampling.backend: hf"
        )
    if not torch.cuda.is_available():
        raise RuntimeError(
            "sampling.backend: vllm needs a CUDA GPU and none is visible; set sampling.backend: hf"
        )


class VLLMSampler:
    """Draws from π with vLLM; quacks like `LanguageModel.sample` for `proposals.propose`."""

    def __init__(self, policy: LanguageModel, gpu_memory_utilization: float = 0.3) -> None:
        require_vllm()
        if policy.has_adapters:
            raise ValueError("sampling.backend: vllm supports full fine-tuning only, not LoRA policies")
        if policy.is_seq2seq:
            raise ValueError("sampling.backend: vllm supports causal LMs only, not encoder-decoders")
        from vllm import LLM

        self.policy = policy
        self.folder = tempfile.TemporaryDirectory(prefix="bayesalign-vllm-")
        policy.save_pretrained(self.folder.name)  # vLLM builds its engine from a model folder
        self.llm = LLM(
            model=self.folder.name,
            dtype=str(next(policy.module.parameters()).dtype).removeprefix("torch."),
            gpu_memory_utilization=gpu_memory_utilization,
            logprobs_mode="processed_logprobs",
        )

    def sync(self) -> None:
        """Copy π's current weights into the engine (after every optimizer update)."""
        weights = [(name, p.detach()) for name, p in self.policy.module.state_dict().items()]
        self.llm.apply_model(lambda model: model.load_weights(weights))

    def sample(
        self,
        n: int,
        params: SamplingParams,
        *,
        contexts: Sequence[str] | None = None,
        generator: torch.Generator | None = None,
        batch_size: int | None = None,  # vLLM schedules its own batches
        differentiable: bool = False,
    ) -> Samples:
        from vllm import SamplingParams as VLLMParams

        if differentiable:
            raise ValueError("vLLM's sampling pass has no autograd graph; π is run again to train")

        if params.banned_tokens:
            raise ValueError("sampling.backend: vllm does not ban tokens; use sampling.backend: hf")
        policy = self.policy
        prompt_ids, prompt_mask = policy.encode_prompts(contexts or [policy.prompt] * n)
        device = generator.device if generator is not None else "cpu"
        seed = int(torch.randint(2**31, (1,), generator=generator, device=device))
        rows = zip(prompt_ids, prompt_mask, strict=True)
        requests = [{"prompt_token_ids": row[m].tolist()} for row, m in rows]
        sampling = [
            VLLMParams(
                max_tokens=params.max_new_tokens,
                temperature=params.temperature,
                top_p=params.top_p,
                top_k=params.top_k if params.top_k > 0 else -1,
                logprobs=0,  # the sampled token's log-probability only
                seed=seed + i,
                stop_token_ids=[policy.tokenizer.eos_token_id],
            )
            for i in range(n)
        ]
        outputs = self.llm.generate(requests, sampling, use_tqdm=False)
        width = max(len(o.outputs[0].token_ids) for o in outputs)
        ids = torch.zeros(n, width, dtype=torch.long)
        mask = torch.zeros(n, width, dtype=torch.bool)
        token_log_q = torch.zeros(n, width)
        for i, output in enumerate(outputs):
            tokens = list(output.outputs[0].token_ids)
            ids[i, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            mask[i, : len(tokens)] = True
            token_log_q[i, : len(tokens)] = torch.tensor(
                [lp[t].logprob for t, lp in zip(tokens, output.outputs[0].logprobs, strict=True)]
            )
        texts = policy.decode(ids, mask)
        contexts = None if contexts is None else list(contexts)
        return Samples(prompt_ids, prompt_mask, ids, mask, token_log_q, texts, contexts)
