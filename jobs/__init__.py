"""The launcher side of the study: jobs/launch.py (CLI), job.py (the submitted callable), profiles.py
(slurm/profiles/*.yaml -> submitit settings), ledger.py (submission records, lock, job states),
runner.py (SLURM arrays / local processes), prefetch.py (models + data before jobs go offline).
hw5 never imports this package; this package imports hw5 only where it needs configs or results."""
