"""The two tasks behind one interface: `build(cfg, seed, data_dir) -> (model, data, variant)`,
`loss_weights`, `extra_metrics`, `write_artifacts`; each data object implements hw5.train.TaskData."""
