"""Turn finished runs (results/<exp>/seed-<n>/metrics.json) into tables, plots and the study report.

Reads JSON only: no torch, no hw5 import, so it runs anywhere in seconds. Entry point: aggregate.py.
"""
