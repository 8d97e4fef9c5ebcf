"""The run contract, one module for `hw5 run`, jobs/launch.py and the report (torch-free).

- Where a run lives: `<results>/<exp>/seed-<n>/`, or `<results>/smoke/<exp>/seed-<n>/` for the tiny
  smoke version, so the two never share a folder.
- What identifies it (`RunKey`): experiment, seed, smoke, the hash of its resolved config and a
  fingerprint of the data it reads (FarsTail's sha256s; ShEMO's file list with sizes; for the
  generated corpus, the settings that fix its bytes).
- What state it is in: one vocabulary (`STATES`). This module judges what is on disk
  (done / stale / corrupt / partial / missing); the launcher adds what the scheduler says.

A run is done exactly when its metrics.json exists, is valid and carries the current key. A result
made from another config or other data is stale: kept, never averaged with current ones, replaced
only on request (`--force`).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from hw5.config import TrainConfig, config_hash
from hw5.io import sha256_file

STATES = {
    "done": "metrics.json with the current config and data",
    "stale": "metrics.json from another config or other data (kept; replaced only with --force)",
    "corrupt": "metrics.json that cannot be read or breaks the schema",
    "partial": "a run folder without metrics.json (the run died, or runs outside the launcher)",
    "missing": "no result yet",
    "pending": "queued; the scheduler's reason says what it waits for",
    "blocked": "queued, but waiting cannot help: the reason and the profile key to change",
    "running": "running now",
    "interrupted": "stopped by the user (Ctrl-C, SIGTERM, scancel) before it finished; its checkpoint is "
                   "kept and launching again resumes it",
    "failed": "its job ended without a result (the run raised, or its job died)",
    "unknown": "the scheduler did not answer; ask again",
    "ignored": "on disk but outside what was asked for (a seed not requested, an experiment the experiments "
               "file does not name): listed, never averaged",
}
SMOKE_TREE = "smoke"        # smoke results live in <results>/smoke/, a results tree of their own
CURVES_TREE = "tensorboard"  # <tree>/tensorboard/<exp>/seed-<n>/: each run's live TensorBoard events
# Keys every metrics.json must carry, and the test scores that must be numbers in [0, 1].
REQUIRED_KEYS = ("experiment", "task", "seed", "config_hash", "classes", "test")
SCORES = ("accuracy", "macro_f1", "weighted_f1", "uar")


@dataclass(frozen=True)
class RunKey:
    """What a result must carry to count as done. data is None where the data is not found here
    (a report on a laptop): then only the config is compared."""
    experiment: str
    seed: int
    smoke: bool
    config_hash: str
    data: str | None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Verdict:
    """A run's state judged from disk, why, and its metrics when they could be read."""
    state: str
    detail: str = ""
    metrics: dict | None = None


def results_tree(results_dir: str | Path, smoke: bool) -> Path:
    return Path(results_dir) / SMOKE_TREE if smoke else Path(results_dir)


def run_dir(results_dir: str | Path, experiment: str, seed: int, smoke: bool = False) -> Path:
    return results_tree(results_dir, smoke) / experiment / f"seed-{seed}"


def curves_dir(run_folder: str | Path) -> Path:
    """Where the run in `run_folder` writes its TensorBoard events: <tree>/tensorboard/<exp>/seed-<n>/."""
    run_folder = Path(run_folder)
    return run_folder.parent.parent / CURVES_TREE / run_folder.parent.name / run_folder.name


def run_key(experiment: str, seed: int, smoke: bool, cfg: TrainConfig | dict,
            data: dict | None) -> RunKey:
    return RunKey(experiment, seed, smoke, config_hash(cfg), data["digest"] if data else None)


# ---------------------------------------------------------------- data fingerprints

def data_fingerprint(cfg: TrainConfig, data_dir: str | Path) -> dict | None:
    """What the run reads, as a small dict with a `digest`; None when the data is not there."""
    if cfg.task == "nli":
        found = _farstail(Path(data_dir))
    elif getattr(cfg, "corpus", "shemo") == "synthetic":
        from hw5.data.synthetic import corpus_settings
        found = {"source": "synthetic", **corpus_settings(getattr(cfg, "synthetic_clips", 0) or None,
                                                           durations=getattr(cfg, "synthetic_durations", "smoke"))}
    else:
        found = _shemo(Path(data_dir), getattr(cfg, "label_source", "filename"))
    if found is None:
        return None
    if getattr(cfg, "split", "") == "emobox":     # the fold decides which clips a run sees
        from hw5.data.emobox import fold_digest
        found["fold"] = fold_digest()
    return {**found, "digest": hashlib.sha1(json.dumps(found, sort_keys=True).encode()).hexdigest()[:12]}


def _farstail(data_dir: Path) -> dict | None:
    from hw5.data.farstail import SPLITS
    files = {}
    for name in SPLITS.values():
        path = data_dir / "farstail" / name
        if not path.is_file():
            return None
        files[name] = sha256_file(path)
    return {"source": "farstail", "files": files}


def _shemo(data_dir: Path, label_source: str) -> dict | None:
    from hw5.data.shemo import GENDERS, MODIFIED_LABELS_NAME
    folder = data_dir / "shemo"
    listing = []
    for gender in GENDERS.values():
        if (folder / gender).is_dir():
            listing += [f"{gender}/{p.name}:{p.stat().st_size}" for p in (folder / gender).iterdir()
                        if p.suffix == ".wav" and p.is_file()]
    if not listing:
        return None
    listing.sort()
    found = {"source": "shemo", "clips": len(listing),
             "listing": hashlib.sha1("\n".join(listing).encode()).hexdigest()[:16]}
    labels = folder / MODIFIED_LABELS_NAME
    if label_source == "modified":
        found["labels"] = sha256_file(labels) if labels.is_file() else None
    return found


# ---------------------------------------------------------------- reading and judging results

def read_metrics(path: Path, experiment: str | None = None, seed: int | None = None) -> tuple[dict | None, str]:
    """Parse and check one metrics.json: (metrics, "") or (None, what is wrong with it)."""
    try:
        metrics = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"not readable JSON ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    if not isinstance(metrics, dict):
        return None, "top level is not a JSON object"
    problems = [k for k in REQUIRED_KEYS if k not in metrics] + _score_problems(metrics) + _history_problems(metrics)
    if "classes" in metrics and not (isinstance(metrics["classes"], list)
                                     and all(isinstance(c, str) for c in metrics["classes"])):
        problems.append("classes (not a list of names)")
    if problems:
        return None, f"missing or invalid: {', '.join(problems)}"
    if experiment is not None and (metrics["experiment"] != experiment or metrics["seed"] != seed):
        return None, (f"says experiment={metrics['experiment']!r} seed={metrics['seed']!r} but sits in "
                      f"{experiment}/seed-{seed}; move it or rerun")
    return metrics, ""


def _score_problems(metrics: dict) -> list[str]:
    test = metrics.get("test")
    if "test" in metrics and not isinstance(test, dict):
        return ["test (not an object)"]
    if not isinstance(test, dict):
        return []
    bad = [f"test.{k}" + (f" ({test[k]!r} is not a number in [0, 1])" if k in test else "")
           for k in SCORES if not (_is_number(test.get(k)) and 0.0 <= test[k] <= 1.0)]
    matrix = test.get("confusion_matrix")
    if matrix is not None and not (isinstance(matrix, list) and all(
            isinstance(row, list) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in row)
            for row in matrix)):
        bad.append("test.confusion_matrix (not rows of counts)")
    return bad


HISTORY_NUMBERS = ("train_loss", "train_acc", "val_loss", "val_acc", "val_macro_f1", "lr", "seconds",
                   "padding_share", "peak_memory_mb")


def _history_problems(metrics: dict) -> list[str]:
    history = metrics.get("history", [])
    if not isinstance(history, list) or not all(isinstance(row, dict) for row in history):
        return ["history (not a list of epoch rows)"]
    bad = sorted({k for row in history for k in HISTORY_NUMBERS
                  if k in row and row[k] is not None and not _is_number(row[k])})
    return [f"history.{k} (not a number)" for k in bad]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def judge(out_dir: Path, key: RunKey) -> Verdict:
    """done / stale / corrupt / partial / missing for the run folder `out_dir`, against `key`."""
    verdict = judge_folder(out_dir, key.experiment, key.seed, key.smoke)
    if verdict.state != "done":
        return verdict
    reason = stale_reason(verdict.metrics, key)
    return Verdict("stale" if reason else "done", reason, verdict.metrics)


def judge_folder(out_dir: Path, experiment: str, seed: int, smoke: bool) -> Verdict:
    """done / corrupt / partial / missing from the folder alone: a valid result of this run is `done`
    here, whatever config made it (judge() compares the key; the report does without one when there is
    no experiments file)."""
    path = Path(out_dir) / "metrics.json"
    if not path.exists():
        if Path(out_dir).is_dir():
            return Verdict("partial", f"{out_dir} has no metrics.json (the run died, or is running)")
        return Verdict("missing")
    metrics, problem = read_metrics(path, experiment, seed)
    if metrics is None:
        return Verdict("corrupt", f"{path}: {problem}")
    if bool(metrics.get("smoke", False)) != smoke:
        kind = "smoke" if metrics.get("smoke") else "full"
        return Verdict("corrupt", f"{path}: a {kind} result in the {'smoke' if smoke else 'full'} tree; move it")
    return Verdict("done", "", metrics)


def stale_reason(metrics: dict, key: RunKey) -> str:
    """Why a valid result does not match `key` ("" when it does)."""
    if metrics.get("config_hash") != key.config_hash:
        return f"made with config {metrics.get('config_hash')}, the experiments file now gives {key.config_hash}"
    if key.data is None:
        return ""
    made_on = (metrics.get("data") or {}).get("digest") if isinstance(metrics.get("data"), dict) else None
    if made_on is None:
        return "records no data fingerprint (made by an older hw5)"
    if made_on != key.data:
        return f"made on data {made_on}, the data here is now {key.data}"
    return ""
