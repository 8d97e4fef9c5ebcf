"""Shared fixtures: the real FarsTail location, tiny models, a fast copy of the experiments grid."""
from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent


def find_data_dir() -> Path | None:
    """A data dir holding farstail/: $HW5_DATA_DIR, the data folder beside the checkout (where the
    Makefile looks too), or ./data; None if none."""
    for candidate in (os.environ.get("HW5_DATA_DIR"), REPO.parent / "shared" / "data", REPO / "data"):
        if candidate and (Path(candidate) / "farstail" / "Train-word.csv").exists():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real FarsTail (read-only); required when HW5_REQUIRE_DATA=1 (CI)."""
    found = find_data_dir()
    if found is None:
        if os.environ.get("HW5_REQUIRE_DATA") == "1":
            pytest.fail("FarsTail not found: set HW5_DATA_DIR to a folder holding farstail/*.csv")
        pytest.skip("FarsTail not found (set HW5_DATA_DIR)")
    return found


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Tiny models and caches built by tests go to one per-session folder, never the user's."""
    old = os.environ.get("HW5_CACHE_DIR")
    os.environ["HW5_CACHE_DIR"] = os.environ.get("HW5_TEST_CACHE_DIR") or str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("HW5_CACHE_DIR", None)
    else:
        os.environ["HW5_CACHE_DIR"] = old


def experiments_file() -> dict:
    """A copy of jobs/experiments.yaml as the project parses it (hw5.config.load_grid, the one grid reader)."""
    from hw5.config import load_grid
    return copy.deepcopy(load_grid(REPO / "jobs" / "experiments.yaml").raw)


def fast_grid(tmp_path: Path, **smoke_overrides) -> Path:
    """The real jobs/experiments.yaml with an even smaller smoke overlay (seconds per run)."""
    grid = experiments_file()
    nli = grid["smoke"]["nli"]
    nli.update(train_subset=96, eval_subset=48, epochs=1, max_length=48, batch_size=16)
    for task, values in smoke_overrides.items():
        grid["smoke"].setdefault(task, {}).update(values)
    path = tmp_path / "experiments.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def grid_file(tmp_path) -> Path:
    return fast_grid(tmp_path)


@pytest.fixture
def small_disk(tmp_path):
    """small_disk(mb, read_only=False): a real tmpfs of that size mounted under tmp_path (root only;
    skipped where mounting is not allowed). Unmounted afterwards."""
    import subprocess
    mounted = []

    def make(mb: float, read_only: bool = False) -> Path:
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        options = f"size={int(mb * 1024)}k" + (",ro" if read_only else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'not root'})")
        mounted.append(point)
        return point
    yield make
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


# `make test` (the fast tier) runs with HW5_FAST_TIER_LIMIT_S set: a test outside the slow / slurm / docker
# markers that takes longer fails, so the tier keeps its few-minute loop (mark the test slow instead).
TIER_MARKERS = ("slow", "slurm", "docker")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    limit = os.environ.get("HW5_FAST_TIER_LIMIT_S")
    report = outcome.get_result()
    if not limit or call.when != "call" or not report.passed:
        return
    if call.duration > float(limit) and not any(item.get_closest_marker(m) for m in TIER_MARKERS):
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid} took {call.duration:.1f} s, over the fast tier's {limit} s: "
                           f"mark it @pytest.mark.slow (it then runs in `make test-all`)")
