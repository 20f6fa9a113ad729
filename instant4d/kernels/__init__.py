"""Triton kernels (one file per op) and their PyTorch twins (``reference.py``)."""
