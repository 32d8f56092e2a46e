"""CUDA C++ sources of inception_fast._C (shipped as package data; see inception_fast/_build.py)."""
