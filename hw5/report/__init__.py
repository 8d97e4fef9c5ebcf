"""Turn finished runs (results/<exp>/seed-<n>/metrics.json) into tables, plots and the study report.

Torch-free: it reads JSON, and the experiments file through hw5.config and hw5.contract (both torch-free),
so it runs anywhere in seconds. Entry point: aggregate.py. What it compares (each task's baseline, the
Findings' questions) is declared in the experiments file's `report:` section (spec.py).
"""
