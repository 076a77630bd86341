"""Soak: N clients x M minutes of mixed requests against one daemon; does anything grow?

`python -m trtd.bench.soak` (run.py; the parts are described there).
"""
