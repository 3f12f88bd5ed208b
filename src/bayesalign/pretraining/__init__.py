"""Pretraining with human feedback: corpus segments, their scores, control tokens, packing."""
