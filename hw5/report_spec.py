"""What the report compares, as the experiments file's `report:` section declares it.

The report's code names no experiment: each task's baseline (the Δ columns and the Findings are
against it) and the questions (one Findings paragraph each, worded by its `kind`) come from here, so
a user's new experiment shows up in the tables at once and in the Findings by adding one line.
Parsed and checked by hw5.config.load_grid with the rest of the file (torch-free, no pandas).
"""
from __future__ import annotations

from dataclasses import dataclass, field

# kind -> what the paragraph compares; "variant" reads a reduced NLI model against the full one
KINDS = {"padding": "dynamic vs fixed padding", "pooling": "two poolings", "imbalance": "with vs without the "
         "imbalance remedy", "leakage": "random vs speaker-independent split", "variant": "a cheaper model",
         "recipe": "a faster training recipe vs the study's"}
CLAIMS = ("lee2019", "sajjad2023", "michel2019")   # literature a "variant" question is read against (findings.py)


class SpecError(ValueError):
    """A problem in the report section; str() is the whole message, without the file name."""


@dataclass(frozen=True)
class Question:
    kind: str          # one of KINDS
    baseline: str      # experiment compared against
    variant: str       # experiment compared
    claim: str = ""    # "variant" questions: one of CLAIMS, or "" for none


@dataclass(frozen=True)
class ReportSpec:
    baselines: dict[str, str] = field(default_factory=dict)   # task -> experiment
    questions: tuple[Question, ...] = ()

    def of_kind(self, kind: str) -> list[Question]:
        return [q for q in self.questions if q.kind == kind]


def first_of_each_task(tasks: dict[str, str]) -> dict[str, str]:
    """The default baselines: each task's first experiment in file order."""
    out: dict[str, str] = {}
    for name, task in tasks.items():
        out.setdefault(task, name)
    return out


def parse_report(section, tasks: dict[str, str]) -> ReportSpec:
    """The `report:` section (None when absent) against the experiments' tasks; SpecError names the key."""
    if section is None:
        return ReportSpec(first_of_each_task(tasks))
    if not isinstance(section, dict) or set(section) - {"baselines", "questions"}:
        raise SpecError("report: must be a mapping with 'baselines' and 'questions' only")
    baselines = section.get("baselines") or {}
    if not isinstance(baselines, dict):
        raise SpecError("report.baselines must map a task to an experiment, e.g. {nli: nli-full}")
    for task, name in baselines.items():
        _known(f"report.baselines.{task}", name, tasks, task)
    questions = section.get("questions") or []
    if not isinstance(questions, list):
        raise SpecError("report.questions must be a list of {kind, baseline, variant}")
    parsed = tuple(_question(i, q, tasks) for i, q in enumerate(questions))
    return ReportSpec({**first_of_each_task(tasks), **baselines}, parsed)


def _question(i: int, q, tasks: dict[str, str]) -> Question:
    where = f"report.questions[{i}]"
    if not isinstance(q, dict) or not {"kind", "baseline", "variant"} <= set(q) or \
            set(q) - {"kind", "baseline", "variant", "claim"}:
        raise SpecError(f"{where} must be {{kind, baseline, variant}} (and claim for kind: variant)")
    if q["kind"] not in KINDS:
        raise SpecError(f"{where}.kind is {q['kind']!r}; use one of {', '.join(KINDS)}")
    _known(f"{where}.baseline", q["baseline"], tasks)
    _known(f"{where}.variant", q["variant"], tasks, tasks[q["baseline"]])
    claim = q.get("claim") or ""
    if claim and claim not in CLAIMS:
        raise SpecError(f"{where}.claim is {claim!r}; use one of {', '.join(CLAIMS)} or leave it out")
    return Question(str(q["kind"]), str(q["baseline"]), str(q["variant"]), str(claim))


def _known(where: str, name, tasks: dict[str, str], task: str | None = None) -> None:
    if name not in tasks:
        raise SpecError(f"{where} is {name!r}, not an experiment of this file")
    if task is not None and tasks[name] != task:
        raise SpecError(f"{where} is {name!r}, a {tasks[name]} experiment; it must be a {task} one")

