"""Bad inputs and failing disks: one line naming the file (and line or key), what is wrong and the fix;
exit code 2; no traceback; nothing partial left; good data untouched."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hw5.run
from hw5.__main__ import main
from hw5.run import run_lock

from conftest import REPO, fast_grid
from launch_support import launch


def hw5_main(capsys, *args) -> tuple[int, str]:
    code = main(list(map(str, args)))
    return code, capsys.readouterr().err


def assert_one_clear_line(code: int, err: str, *says: str) -> None:
    """Exit 2 and one error line (progress bars of model loading may come before it), no traceback."""
    lines = [line for line in err.splitlines() if "error" in line]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("hw5 ") and "Traceback" not in err, err
    for text in says:
        assert text in lines[0], (text, lines[0])


def _grid_with(tmp_path: Path, text_from, to) -> Path:
    grid = fast_grid(tmp_path)
    text = grid.read_text(encoding="utf-8")
    assert text_from in text
    grid.write_text(text.replace(text_from, to, 1), encoding="utf-8")
    return grid


# ---------------------------------------------------------------- the experiments file

@pytest.mark.parametrize("edit, says", [
    (("    lr: 3.0e-05\n", "    lr: 3.0e-05\n    lr: 0.9\n"), "key 'lr' appears twice (lines"),
    (("  nli-freeze9:\n", "  nli-full:\n    task: nli\n  nli-freeze9:\n"), "key 'nli-full' appears twice"),
    (("    lr: 0.001\n", "    lr: -5.0\n"), "nli-full.lr is -5.0; it must be > 0 and <= 1"),
    (("    train_subset: 96\n", "    train_subset: -640\n"), "nli-full.train_subset is -640; it must be >= 0"),
    (("    max_length: 48\n", "    max_length: 100000\n"), "nli-full.max_length is 100000; it must be >= 8 and <= 4096"),
])
def test_experiments_file_mistakes_are_one_line_before_anything_runs(tmp_path, capsys, edit, says):
    grid = _grid_with(tmp_path, *edit)
    code, err = hw5_main(capsys, "run", "nli-full", "--smoke", "--experiments", grid, "--results", tmp_path / "r")
    assert_one_clear_line(code, err, str(grid), says)
    assert not (tmp_path / "r").exists()


def test_a_binary_file_or_a_folder_as_the_experiments_file(tmp_path, capsys):
    binary = tmp_path / "grid.yaml"
    binary.write_bytes(b"seeds: [0]\n\xff\xfe\x00\x81 binary")
    code, err = hw5_main(capsys, "run", "nli-full", "--smoke", "--experiments", binary)
    assert_one_clear_line(code, err, str(binary), "not UTF-8 text", "Save it as UTF-8")
    code, err = hw5_main(capsys, "run", "nli-full", "--smoke", "--experiments", tmp_path)
    assert_one_clear_line(code, err, str(tmp_path), "is a directory, not an experiments file")


def test_the_launcher_and_profiles_refuse_duplicate_keys_too(tmp_path):
    grid = _grid_with(tmp_path, "    lr: 3.0e-05\n", "    lr: 3.0e-05\n    lr: 0.9\n")
    out = launch(["--all", "--smoke", "--dry-run", "--cluster", "local", "--experiments", str(grid),
                  "--results", str(tmp_path / "r")], dict(os.environ))
    assert out.returncode == 2 and "key 'lr' appears twice" in out.stdout and "Traceback" not in out.stdout
    profile = tmp_path / "p.yaml"
    profile.write_text("slurm:\n  partition: a\n  partition: b\n")
    out = launch(["--all", "--smoke", "--dry-run", "--cluster", "local", "--profile", str(profile)], dict(os.environ))
    assert out.returncode == 2 and f"{profile}:3: key 'partition' appears twice" in out.stdout, out.stdout


def test_more_layers_than_the_model_has_is_one_line(tmp_path, data_dir, capsys):
    grid = _grid_with(tmp_path, "  nli-first9:\n", "  nli-deep:\n    task: nli\n    keep_layers: 40\n  nli-first9:\n")
    code, err = hw5_main(capsys, "run", "nli-deep", "--smoke", "--experiments", grid, "--data-dir", data_dir,
                         "--results", tmp_path / "r")
    assert_one_clear_line(code, err, f"{grid}: experiment nli-deep: keep_layers is 40, but the model", "has 12 encoder layers",
                          "set keep_layers to 0..12")
    assert not list((tmp_path / "r").rglob("metrics.json"))


# ---------------------------------------------------------------- FarsTail

def _farstail_copy(tmp_path: Path, data_dir: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(data_dir / "farstail", copy / "farstail")
    for path in (copy / "farstail").iterdir():
        path.chmod(0o644)
    return copy


@pytest.mark.parametrize("damage, says", [
    ("latin1", "Val-word.csv:2: not UTF-8"),
    ("cut", "not UTF-8 (byte 0xd"),
    ("drop", "Train-word.csv: 6,266 pairs, but the FarsTail release has 7,266"),
])
def test_damaged_farstail_is_one_line_naming_file_and_line(tmp_path, data_dir, capsys, damage, says):
    data = _farstail_copy(tmp_path, data_dir)
    val, train = data / "farstail" / "Val-word.csv", data / "farstail" / "Train-word.csv"
    if damage == "latin1":
        lines = val.read_bytes().split(b"\n")
        lines[1] = lines[1].decode("utf-8").encode("cp1256", errors="replace")   # another encoding
        val.write_bytes(b"\n".join(lines))
    elif damage == "cut":
        raw = val.read_bytes()
        val.write_bytes(raw[: raw.index("ی".encode()) + 1])                      # inside a character
    else:
        lines = train.read_bytes().split(b"\n")
        train.write_bytes(b"\n".join(lines[:-1001] + [b""]))                    # 1,000 rows gone
    for args in (("stats", "nli", "--smoke"), ("run", "nli-full", "--smoke", "--experiments", fast_grid(tmp_path))):
        code, err = hw5_main(capsys, *args, "--data-dir", data, "--results", tmp_path / "r")
        assert_one_clear_line(code, err, says, "hw5 prepare nli")
    assert not list((tmp_path / "r").rglob("metrics.json"))


# ---------------------------------------------------------------- where results and checkpoints go

def test_results_on_a_read_only_or_full_disk_or_a_file_are_refused_before_training(tmp_path, capsys, small_disk):
    grid = fast_grid(tmp_path)
    read_only, tiny = small_disk(4, read_only=True), small_disk(1)
    a_file = tmp_path / "results.txt"
    a_file.write_text("not a folder")
    for results, says in ((read_only, "not writable (read-only filesystem or permissions)"),
                          (tiny, "MB free, a run's results needs about 50 MB"), (a_file, "is a file")):
        code, err = hw5_main(capsys, "run", "nli-full", "--smoke", "--experiments", grid, "--results", results)
        assert_one_clear_line(code, err, str(results), says)
    code, err = hw5_main(capsys, "stats", "nli", "--smoke", "--results", a_file)
    assert_one_clear_line(code, err, "is a file")
    out = launch(["--all", "--smoke", "--cluster", "local", "--results", str(a_file), "--experiments", str(grid)],
                 dict(os.environ))
    assert out.returncode == 2 and "is a file" in out.stdout and "Traceback" not in out.stdout, out.stdout
    assert a_file.read_text() == "not a folder"


@pytest.mark.slow
def test_a_disk_that_fills_while_checkpointing_is_one_line_and_no_result(tmp_path, data_dir, capsys, small_disk,
                                                                       monkeypatch):
    monkeypatch.setitem(hw5.run.CHECKPOINT_ROOM_MB, "smoke", 0)   # let it start on a disk too small
    ckpt = small_disk(0.5)                                        # real: a tiny model's checkpoint needs ~5 MB
    code, err = hw5_main(capsys, "run", "nli-full", "--smoke", "--experiments", fast_grid(tmp_path),
                         "--data-dir", data_dir, "--results", tmp_path / "r", "--checkpoint-dir", ckpt)
    assert_one_clear_line(code, err, "the checkpoint could not be written", "free some space")
    assert not list((tmp_path / "r").rglob("metrics.json")) and not list(ckpt.glob("*.tmp"))


@pytest.mark.slow
def test_a_full_results_disk_leaves_no_half_written_run(tmp_path, data_dir, capsys, small_disk, monkeypatch):
    monkeypatch.setattr(hw5.run, "RESULTS_ROOM_MB", 0)
    results = small_disk(1)
    (results / "filler").write_bytes(b"\0" * (shutil.disk_usage(results).free - 12 * 1024))   # 3 blocks left
    code, err = hw5_main(capsys, "run", "nli-full", "--smoke", "--experiments", fast_grid(tmp_path),
                         "--data-dir", data_dir, "--results", results, "--checkpoint-dir", tmp_path / "ckpt")
    assert_one_clear_line(code, err, "the results could not be written", "nothing was kept")
    run_folder = results / "smoke" / "nli-full"
    assert list(run_folder.iterdir()) == [], "no seed-0/, no staging folder"
    assert (tmp_path / "ckpt" / "last.pt").exists()      # the work is kept: a rerun finishes from it


# ---------------------------------------------------------------- runs that overlap, stop, or are stopped

def test_a_second_run_of_the_same_run_says_who_holds_it(tmp_path, capsys):
    grid = fast_grid(tmp_path)
    out = tmp_path / "r" / "smoke" / "nli-full" / "seed-0"
    with run_lock(out, tmp_path / "ckpt"):
        code, err = hw5_main(capsys, "run", "nli-full", "--smoke", "--experiments", grid, "--results", tmp_path / "r",
                             "--checkpoint-dir", tmp_path / "ckpt")
    assert_one_clear_line(code, err, f"{out} is being trained by process {os.getpid()}", "wait for it")


def _hw5_process(args: list, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HW5_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "hw5", *map(str, args)], env=env, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT)


def _wait_for(path: Path, text: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    end = time.time() + timeout
    while text not in (path.read_text() if path.exists() else ""):
        assert proc.poll() is None and time.time() < end, path.read_text()
        time.sleep(0.05)


@pytest.mark.slow
def test_sigterm_outside_slurm_checkpoints_exits_cleanly_and_resumes(tmp_path, data_dir):
    grid = fast_grid(tmp_path, nli={"epochs": 2, "train_subset": 192, "checkpoint_every": 2})
    common = ["run", "nli-full", "--smoke", "--experiments", grid, "--data-dir", data_dir]
    ref = _hw5_process([*common, "--results", tmp_path / "ref", "--checkpoint-dir", tmp_path / "ref-ckpt"],
                       tmp_path / "ref.log")
    assert ref.wait(timeout=300) == 0
    where = ["--results", tmp_path / "r", "--checkpoint-dir", tmp_path / "ckpt"]
    proc = _hw5_process([*common, *where], tmp_path / "term.log")
    end = time.time() + 300
    while not (tmp_path / "ckpt" / "last.pt").exists():     # mid-training: the first periodic checkpoint
        assert proc.poll() is None and time.time() < end, (tmp_path / "term.log").read_text()
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    log = (tmp_path / "term.log").read_text()
    assert "hw5 run: stopped by SIGTERM: checkpoint saved at epoch" in log and "Traceback" not in log, log
    assert (tmp_path / "ckpt" / "last.pt").exists() and not list((tmp_path / "r").rglob("metrics.json"))
    again = _hw5_process([*common, *where], tmp_path / "again.log")
    assert again.wait(timeout=300) == 0 and "resumed from" in (tmp_path / "again.log").read_text()
    read = lambda root: json.loads((root / "smoke" / "nli-full" / "seed-0" / "metrics.json").read_text())  # noqa: E731
    assert read(tmp_path / "r")["test"] == read(tmp_path / "ref")["test"]


@pytest.mark.slow
def test_ctrl_c_twice_is_one_line_without_a_traceback(tmp_path, data_dir):
    grid = fast_grid(tmp_path, nli={"epochs": 3, "train_subset": 384})
    proc = _hw5_process(["run", "nli-full", "--smoke", "--experiments", grid, "--data-dir", data_dir,
                         "--results", tmp_path / "r", "--checkpoint-dir", tmp_path / "ckpt"], tmp_path / "int.log")
    _wait_for(tmp_path / "int.log", "Loading weights", proc)
    proc.send_signal(signal.SIGINT)
    _wait_for(tmp_path / "int.log", "saving a checkpoint at the next step", proc)
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=120)
    log = (tmp_path / "int.log").read_text()
    # the second Ctrl-C stops at once, unless the first one's checkpoint was already written
    assert code == 130 and ("hw5 run: interrupted" in log or "stopped by SIGINT" in log), log
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log


def test_offline_statistics_fail_at_once_naming_the_model(tmp_path, capsys, data_dir, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")      # a hub nobody answers for
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    started = time.time()
    code, err = hw5_main(capsys, "stats", "nli", "--data-dir", data_dir, "--results", tmp_path / "r")
    assert time.time() - started < 20
    assert_one_clear_line(code, err, "model HooshvareLab/bert-base-parsbert-uncased: not in the local cache",
                          "127.0.0.1 cannot be reached", "--prefetch")


def test_the_umask_is_read_without_being_changed(tmp_path):
    probe = ("import os, tempfile; os.umask(0o027); from hw5.io import _umask, share_like_umask; "
             "fd, p = tempfile.mkstemp(dir=os.environ['D']); share_like_umask(p); "
             "print(oct(_umask()), oct(os.stat(p).st_mode & 0o777), oct(os.umask(0o022)))")
    out = subprocess.run([sys.executable, "-c", probe], env={**os.environ, "D": str(tmp_path), "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0o27", "0o640", "0o27"]


def test_a_shemo_tree_missing_clips_is_an_error_never_a_smaller_study(tmp_path, capsys):
    from test_shemo import SMALL, _tree
    _tree(tmp_path / "data" / "shemo", SMALL)                  # 5 real WAVs of the 3,000
    code, err = hw5_main(capsys, "stats", "ser", "--data-dir", tmp_path / "data", "--results", tmp_path / "r")
    assert code == 2 and "Traceback" not in err, err        # the error's first line, then the files it lists
    assert err.startswith("hw5 stats: error: ") and "2995 of 3000 expected file(s) missing" in err.splitlines()[0]
    assert "missing: F01A02.wav" in err and "hw5 prepare ser" in err
