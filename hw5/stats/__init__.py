"""`hw5 stats nli|ser`: dataset statistics, in one place (nli.py: FarsTail; ser.py: the SER corpus).

Each task's statistics describe the data as its baseline experiment reads it (tokenizer and max_length
for NLI; corpus, labels and sample rate for SER). Which experiment that is comes from the experiments
file: its `report:` baselines, else the task's first experiment; no experiment is named here.
"""
from __future__ import annotations

from pathlib import Path

from hw5.config import ConfigError, TrainConfig, load_grid
from hw5.report_spec import first_of_each_task


def baseline_config(task: str, smoke: bool = False, config_path=None) -> TrainConfig:
    """The resolved config of the task's baseline experiment in the experiments file."""
    grid = load_grid(config_path)
    name = grid.report.baselines.get(task) or first_of_each_task(grid.tasks).get(task)
    if name is None:
        raise ConfigError(f"{grid.path}: no {task} experiment to take the statistics' settings from; add one")
    return grid.resolve(name, smoke)


def write_task_stats(task: str, data_dir: Path, out_dir: Path, smoke: bool = False, config_path=None) -> list[Path]:
    """Write <out_dir>/<task>_stats.json (the source), its Markdown, CSVs and PNGs; the files written."""
    cfg = baseline_config(task, smoke, config_path)
    if task == "nli":
        from hw5.stats.nli import nli_stats
        return nli_stats(cfg, data_dir, out_dir)
    from hw5.stats.ser import corpus_stats
    return corpus_stats(cfg, data_dir, out_dir)
