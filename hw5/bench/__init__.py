"""`hw5 bench`: training speed of the project's paths against a naive loop and a fixed-shape ceiling.

core.py (paths, timed passes, the `bench` entry), work.py (workloads), timing.py (sync, peak memory),
report.py (bench.json / bench.md), grid.py (the grid's estimated device time), decode.py, startup.py,
posconv.py (extra measurements). Apart from the core, nothing here is imported by a run.
"""
