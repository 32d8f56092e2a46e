"""Benchmarks of inception_fast against cuDNN and torch.compile (pytest-benchmark), and the
report maker (`python -m bench.report`). See bench/conftest.py for the options."""
