"""Where π's samples come from: the model's own forward passes (``hf``, models.py, the default and
the only backend tested here) or a vLLM engine on a GPU (``vllm``, optional and untested)."""

from bayesalign.sampling_backends.vllm_engine import VLLMSampler, require_vllm

__all__ = ["VLLMSampler", "require_vllm"]
