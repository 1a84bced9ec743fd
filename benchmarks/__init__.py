"""Benchmarks: a hand-derived NumPy reference for RNN/LSTM/GRU and the timing harness (run.py)."""
