"""hw5 command line: run / stats / prepare.

  python -m hw5 run nli-full --seed 0 --smoke      one experiment, one seed -> results/smoke/nli-full/seed-0/
  python -m hw5 stats nli                          dataset statistics -> results/stats/
  python -m hw5 prepare nli                        download FarsTail (or say where to put it)
  python -m hw5 bench                              naive vs project vs fixed-shape training speed
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path



def _user_errors() -> tuple[type[BaseException], ...]:
    from hw5.config import ConfigError
    from hw5.errors import DataError, RunRefused, StorageError
    return ConfigError, DataError, RunRefused, StorageError


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="hw5", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", help="datasets folder (default: $HW5_DATA_DIR or ./data)")
    common.add_argument("--results", default=os.environ.get("HW5_RESULTS_DIR", "results"),
                        help="results folder (default: $HW5_RESULTS_DIR or ./results)")
    common.add_argument("--experiments", help="experiments YAML (default: jobs/experiments.yaml)")
    common.add_argument("--smoke", action="store_true", help="tiny models, small data: runs on a laptop CPU")

    run = sub.add_parser("run", parents=[common], help="train + evaluate one experiment for one seed",
                         description="Train and evaluate one experiment; writes results/<exp>/seed-<n>/metrics.json last "
                                     "(results/smoke/<exp>/seed-<n>/ with --smoke).")
    run.add_argument("experiment", help="a name from jobs/experiments.yaml, e.g. nli-full")
    run.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    run.add_argument("--force", action="store_true",
                     help="retrain from scratch even when a result exists (done, stale or corrupt); "
                          "without it a stale result is refused")
    run.add_argument("--checkpoint-dir", help="checkpoint folder (default: $HW5_CHECKPOINT_DIR or checkpoints/<exp>/seed-<n>)")
    run.add_argument("--keep-checkpoints", action="store_true", help="keep the checkpoint after success")

    stats = sub.add_parser("stats", parents=[common], help="dataset statistics tables and plots",
                           description="Write dataset statistics under <results>/stats/: <task>_stats.json (the source), "
                                       "its Markdown, CSVs and PNGs "
                                       "(<results>/smoke/stats/ with --smoke).")
    stats.add_argument("task", choices=["nli", "ser"])

    prep = sub.add_parser("prepare", parents=[common], help="download / unpack a dataset into the data dir",
                          description="nli: fetch FarsTail's three CSVs (checksummed). "
                                      "ser: unpack ShEMO's female.zip + male.zip (from --zips DIR, or download).")
    prep.add_argument("task", choices=["nli", "ser"])
    prep.add_argument("--zips", help="ser: folder holding female.zip and male.zip")
    prep.add_argument("--url", help="base URL to download from (default: the public source)")
    bench = sub.add_parser("bench", help="time naive vs project vs fixed-shape vs HF Trainer training paths",
                           description="One epoch-sized pass of training steps per path (naive / project / "
                                       "ceiling / the Hugging Face Trainer as peer) for NLI and SER on random-init models: tiny on CPU, "
                                       "full-size on a GPU. Writes <results>/bench/bench.{json,md}.")
    bench.add_argument("--tasks", default="nli,ser", help="comma-separated: nli,ser ('' = none, e.g. with --decode)")
    bench.add_argument("--full", action="store_true", help="full-size models even on CPU (slow)")
    bench.add_argument("--tiny", action="store_true", help="tiny models even on a GPU")
    bench.add_argument("--nli-pairs", type=int, default=512, help="pairs per NLI epoch (default 512)")
    bench.add_argument("--ser-clips", type=int, default=320, help="clips per SER epoch (default 320)")
    bench.add_argument("--ablations", action="store_true",
                       help="also time the project path minus (or plus) each optimization, 2x examples per step, "
                            "forward-only, torch.compile on the fixed shape, and estimate the default grid's time")
    bench.add_argument("--paths", default="",
                       help="comma-separated ablation or peer rows to time instead of all of them, e.g. "
                            "project+graphs,peer-trainer+compile (naive, project, ceiling and peer-trainer "
                            "always run; the peers need pip install -e '.[bench]')")
    bench.add_argument("--decode", type=int, default=0, metavar="N",
                       help="also time decode + resample of an N-clip synthetic ShEMO-format corpus (e.g. 3000)")
    bench.add_argument("--repeat", type=int, default=1, metavar="N",
                       help="time N passes per path and report the median (host-bound GPU passes last ~1 s "
                            "and move +-15%% between runs; e.g. 3)")
    bench.add_argument("--startup", type=int, default=0, metavar="N",
                       help="also time a run's host-side start-up (imports, data, full-size model load, stored "
                            "CNN features) with an N-clip synthetic ShEMO-format corpus (e.g. 3000)")
    bench.add_argument("--posconv", action="store_true",
                       help="also time HuBERT-base's positional conv alone, forward + backward, by each method "
                            "(conv, matmul, fft; minutes on a CPU)")
    bench.add_argument("--profile", action="store_true",
                       help="also write torch.profiler tables of a few project steps (profile_<task>.txt)")
    bench.add_argument("--data-dir", help="FarsTail location for real pair lengths (default: $HW5_DATA_DIR)")
    bench.add_argument("--results", default=os.environ.get("HW5_RESULTS_DIR", "results"), help="results folder")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except _user_errors() as exc:
        print(f"hw5 {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hw5 {args.command}: interrupted", file=sys.stderr)
        return 130


def cmd_run(args) -> int:
    import hw5.train
    from hw5.run import run_experiment
    with hw5.train.stop_on_signals("hw5 run") as received:
        try:
            run_experiment(args.experiment, args.seed, smoke=args.smoke, results_dir=args.results,
                           data_dir=args.data_dir, checkpoint_dir=args.checkpoint_dir, force=args.force,
                           keep_checkpoints=args.keep_checkpoints, config_path=args.experiments)
        except hw5.train.Interrupted as exc:
            name = received[-1] if received else "a stop request"
            print(f"hw5 run: stopped by {name}: {exc}; run the same command again to resume", file=sys.stderr)
            return 128 + getattr(signal, name, signal.SIGTERM) if received else 1
    return 0


def cmd_stats(args) -> int:
    from hw5.contract import results_tree
    from hw5.io import check_room, data_dir
    out = results_tree(args.results, args.smoke) / "stats"    # smoke statistics beside the smoke runs
    check_room(out, 20, "statistics")
    from hw5.stats import write_task_stats
    written = write_task_stats(args.task, data_dir(args.data_dir), out, smoke=args.smoke, config_path=args.experiments)
    for path in written:
        print(path)
    return 0


def cmd_prepare(args) -> int:
    from hw5.io import data_dir
    if args.task == "nli":
        from hw5.data.farstail import ensure_farstail
        print(f"FarsTail ready in {ensure_farstail(data_dir(args.data_dir), url=args.url)}")
    else:
        from hw5.data.shemo import prepare_shemo
        prepare_shemo(data_dir(args.data_dir), zips_from=args.zips, url=args.url)
    return 0


def cmd_bench(args) -> int:
    from hw5.bench.core import BenchOptions, bench
    from hw5.io import data_dir
    full = True if args.full else False if args.tiny else None
    bench(Path(args.results) / "bench", BenchOptions(
        tasks=tuple(t for t in args.tasks.split(",") if t), full=full, nli_pairs=args.nli_pairs,
        ser_clips=args.ser_clips, data_dir=data_dir(args.data_dir), ablations=args.ablations, profile=args.profile,
        decode_clips=args.decode, startup_clips=args.startup, repeat=args.repeat,
        paths=tuple(p for p in args.paths.split(",") if p), posconv=args.posconv))
    return 0


COMMANDS = {"run": cmd_run, "stats": cmd_stats, "prepare": cmd_prepare, "bench": cmd_bench}

if __name__ == "__main__":
    sys.exit(main())
