"""The experiments file: every experiment resolves; typos and wrong types are one clear error."""
from __future__ import annotations

import pytest

from hw5.__main__ import main
from hw5.config import ConfigError, NLIConfig, config_hash, load_grid, resolve_config


def write(tmp_path, text):
    path = tmp_path / "experiments.yaml"
    path.write_text(text, encoding="utf-8")
    return path


BASE = """
seeds: [0, 1]
defaults:
  nli: {epochs: 3}
experiments:
  nli-full: {task: nli}
  nli-first9: {task: nli, keep_layers: 9}
"""


def test_real_grid_resolves_every_experiment_with_and_without_smoke():
    grid = load_grid()
    assert grid.seeds == [0, 1, 2, 3, 4]
    assert {"nli-full", "nli-freeze9", "nli-lastonly", "nli-first9", "nli-prune50"} <= set(grid.experiments)
    cfg = resolve_config("nli-freeze9")
    assert isinstance(cfg, NLIConfig) and cfg.freeze_first_layers == 9 and cfg.freeze_embeddings
    assert resolve_config("nli-prune50", smoke=True).model_name == "tiny"
    assert resolve_config("nli-full").model_name == "HooshvareLab/bert-base-parsbert-uncased"


def test_yaml_1_2_floats_are_floats(tmp_path):
    path = write(tmp_path, BASE.replace("epochs: 3", "epochs: 3, lr: 5e-5, head_lr: 1E-3"))
    cfg = resolve_config("nli-full", path=path)
    assert cfg.lr == 5e-5 and isinstance(cfg.lr, float) and cfg.head_lr == 1e-3


@pytest.mark.parametrize("text, message", [
    (BASE.replace("epochs: 3", "epohcs: 3"), "unknown key 'epohcs' in defaults.nli; did you mean 'epochs'?"),
    (BASE.replace("epochs: 3", "lr: '5e-5'"), "defaults.nli.lr must be float, got str '5e-5'"),
    (BASE.replace("epochs: 3", "epochs: three"), "defaults.nli.epochs must be int, got str 'three'"),
    (BASE.replace("keep_layers: 9", "keep_layers: 9.5"), "experiments.nli-first9.keep_layers must be int"),
    (BASE.replace("task: nli}", "task: nil}"), "needs 'task: nli' or 'task: ser'"),
    (BASE.replace("seeds: [0, 1]", "seeds: 0-4"), "'seeds' must be a list of integers"),
    (BASE + "  bad: [\n", "not valid YAML"),
    (BASE.replace("epochs: 3", "batch_budget: 4096.0, batching: dynamic"), "nli-full.batch_budget is 4096.0: it needs batching: bucket"),
    (BASE.replace("defaults:", "defualts:"), "unknown key 'defualts' in top level; did you mean 'defaults'?"),
    (BASE.replace("nli-first9:", "tensorboard:"), "experiment name 'tensorboard' cannot name a results folder"),
    (BASE.replace("nli-first9:", "'nli/first9':"), "experiment name 'nli/first9' cannot name a results folder"),
])
def test_bad_grid_is_one_clear_error(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_grid(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_unknown_experiment_suggests_the_close_name(tmp_path):
    with pytest.raises(ConfigError, match="unknown experiment 'nli-fulll'; did you mean 'nli-full'"):
        resolve_config("nli-fulll", path=write(tmp_path, BASE))


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    path = write(tmp_path, BASE.replace("epochs: 3", "epochs: x"))
    assert main(["run", "nli-full", "--experiments", str(path), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "must be int" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_config_hash_tracks_results_relevant_fields_only(tmp_path):
    a = resolve_config("nli-full", path=write(tmp_path, BASE))
    b = resolve_config("nli-full", path=write(tmp_path, BASE.replace("epochs: 3", "epochs: 3, log_every: 7")))
    c = resolve_config("nli-full", path=write(tmp_path, BASE.replace("epochs: 3", "epochs: 4")))
    assert config_hash(a) == config_hash(b) != config_hash(c)
    assert len(config_hash(a)) == 8
