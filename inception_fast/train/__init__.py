"""The training loop of the paper's recipe (`inception-fast train`), its optimizer, schedule,
EMA, checkpoints, noisy labels and joint optimization, and multi-process data parallel."""
