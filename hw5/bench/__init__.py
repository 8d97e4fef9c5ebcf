"""`hw5 bench`: training speed of the project's paths against a naive loop, a fixed-shape ceiling and the
Hugging Face Trainer.

core.py (paths, timed passes, the `bench` entry), work.py (workloads), timing.py (sync, peak memory, a
row), report.py (bench.json / bench.md), grid.py (the grid's estimated device time), peer.py (the
Trainer rows), decode.py, startup.py, posconv.py (extra measurements). Apart from the core, nothing here
is imported by a run.
"""
