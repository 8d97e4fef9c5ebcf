"""Sweeps: a hyper-parameter grid inside one experiment of the experiments file.

    nli-full:
      task: nli
      lr: 3.0e-5
      sweep: {lr: [2.0e-5, 5.0e-5], epochs: [3, 4]}     # the cartesian product: 4 points

Each point is an experiment of its own, named by how it differs from its experiment
(`nli-full@lr=2e-05,epochs=4`): its own config hash, run key, results folder and SLURM job. The
experiment itself stays in the grid as the declared default, and a point whose values are the
default's is that experiment, not a second run of it. The swept values override the smoke overlay too:
they are what tells the points apart. The report chooses a point by validation score only
(hw5/report/sweeps.py). This module only expands names and values; hw5/config.py checks them like any
field of the experiment.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field

MARK = "@"                     # <experiment>@<field>=<value>,<field>=<value>
# A point's name is a folder and part of a SLURM job name: a few more characters than an experiment's.
MAX_POINT_NAME = 160
_VALUE_TEXT = re.compile(r"[A-Za-z0-9_.+-]+")
NOT_SWEPT = {"task", "description"}     # what a point may not change: its task, its label


class SweepError(ValueError):
    """A problem with a sweep; str() names where (experiments.<name>.sweep...) and the fix."""


@dataclass
class Sweep:
    """One experiment's sweep: the swept fields' values (file order) and the points it expands to."""
    experiment: str
    values: dict[str, list]                                    # field -> values, as in the file
    points: dict[str, dict] = field(default_factory=dict)     # point name -> {field: value}
    default_point: str | None = None     # the point whose config is the experiment's own (not run twice)

    @property
    def size(self) -> int:
        """Points of the full product (the one equal to the declared default included)."""
        size = 1
        for values in self.values.values():
            size *= len(values)
        return size


def read_sweep(experiment: str, section) -> Sweep:
    """The `sweep:` mapping of an experiment, checked for shape (the values' types and ranges are the
    config's to check): field -> a list of one or more distinct values."""
    where = f"experiments.{experiment}.sweep"
    if not isinstance(section, dict) or not section:
        raise SweepError(f"{where} must map fields to lists of values, e.g. {{lr: [2.0e-5, 5.0e-5]}}")
    for key, values in section.items():
        if key in NOT_SWEPT:
            raise SweepError(f"{where}.{key}: a sweep cannot change '{key}'; make another experiment")
        if not isinstance(values, list):
            raise SweepError(f"{where}.{key} must be a list of values, e.g. [{values!r}]")
        if not values:
            raise SweepError(f"{where}.{key} is an empty list: give it one value or more")
        texts = [value_text(v) for v in values]
        if len(set(texts)) < len(texts):
            raise SweepError(f"{where}.{key} lists a value twice ({', '.join(texts)}): keep each once")
        for value, text in zip(values, texts):
            if not _VALUE_TEXT.fullmatch(text):
                raise SweepError(f"{where}.{key}: {value!r} cannot be part of a folder name; use letters, "
                                 "digits, '.', '_', '+' or '-'")
    sweep = Sweep(experiment, {str(k): list(v) for k, v in section.items()})
    for combination in itertools.product(*sweep.values.values()):
        values = dict(zip(sweep.values, combination))
        name = point_name(experiment, values)
        if len(name) > MAX_POINT_NAME:
            raise SweepError(f"{where}: the point name '{name[:30]}...' is {len(name)} characters long; at most "
                             f"{MAX_POINT_NAME} fit a folder and a SLURM job name: shorten the experiment's name")
        sweep.points[name] = values
    return sweep


def value_text(value) -> str:
    """A swept value as a name shows it: 2e-05, 0.1, 4, true, bucket."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def point_name(experiment: str, values: dict) -> str:
    return experiment + MARK + ",".join(f"{key}={value_text(value)}" for key, value in values.items())


def base_of(name: str) -> str:
    """The experiment a point belongs to (the name itself for an experiment)."""
    return name.split(MARK, 1)[0]
