"""Peer servers the benchmark compares trtd with (today: NVIDIA Triton through PyTriton)."""
