"""Triton kernels (importable as inception_fast.kernels): pure @triton.jit functions and thin
launch helpers that check shapes and pick grids. No autograd, no nn.Module."""
