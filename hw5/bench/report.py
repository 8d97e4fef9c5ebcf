"""`hw5 bench`'s outputs: ratios to the naive and ceiling rows, the grid estimate, bench.{json,md}."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from hw5.io import provenance, write_json_atomic, write_text_atomic


def with_ratios(table: pd.DataFrame) -> pd.DataFrame:
    """vs_naive, vs_ceiling, and vs_peer: the rate over the fastest Trainer row of the task (NaN without one)."""
    by = table.set_index(["task", "path"])["units_per_s"]
    table["vs_naive"] = [r.units_per_s / by[(r.task, "naive")] for r in table.itertuples()]
    table["vs_ceiling"] = [r.units_per_s / by[(r.task, "ceiling")] for r in table.itertuples()]
    peers = table[table["path"].str.startswith("peer-")].groupby("task")["units_per_s"].max()
    table["vs_peer"] = [r.units_per_s / peers.get(r.task, float("nan")) for r in table.itertuples()]
    return table


def peer_markdown(table: pd.DataFrame) -> str:
    """The project's default eager path and its graphed path against the fastest Trainer row, per task."""
    lines = []
    for task, rows in table.groupby("task", sort=False):
        peers = rows[rows["path"].str.startswith("peer-")]
        if peers.empty:
            continue
        best = peers.loc[peers["units_per_s"].idxmax()]
        for ours in rows[rows["path"].isin(["project", "project+graphs"])].itertuples():
            lines.append(f"| {task} | {ours.path} | {ours.units_per_s:.4g} | {best['path']} | "
                         f"{best['units_per_s']:.4g} | **{ours.vs_peer:.2f}x** |")
    if not lines:
        return ""
    return ("Against the Hugging Face Trainer (the fastest peer row of each task; same model, examples, "
            "batch size and units):\n\n| task | hw5 row | units/s | best peer | units/s | hw5 / peer |\n"
            "|:--|:--|--:|:--|--:|--:|\n" + "\n".join(lines))


def grid_estimate(table: pd.DataFrame, device: torch.device, startup: dict | None = None) -> dict | None:
    from hw5.bench.grid import estimate
    return estimate(table, torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                    startup=startup)


def write_report(out_dir: Path, table: pd.DataFrame, device: torch.device, full: bool, estimate: dict | None,
           decode: dict | None, startup: dict | None = None, posconv: list[dict] | None = None,
           notes: list[str] | None = None) -> None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    meta = {"device": name, "models": "full-size" if full else "tiny", "threads": torch.get_num_threads(),
            "provenance": provenance(name)}
    write_json_atomic(out_dir / "bench.json", {**meta, "rows": table.to_dict(orient="records"),
                                               "grid_estimate": estimate, "decode": decode,
                                               "startup": startup, "posconv": posconv, "notes": notes or []})
    md = table.to_markdown(index=False, floatfmt=".3g") if len(table) else "(no training paths timed)"
    models = f"{meta['models']} models on " if len(table) else ""    # --decode/--startup/--posconv alone
    text = f"### hw5 bench ({models}{name}, {meta['threads']} threads)\n\n{md}\n"
    if len(table) and (peers := peer_markdown(table)):
        text += "\n" + peers + "\n"
    text += "".join(f"\n{note}\n" for note in notes or [])
    if estimate:
        text += "\n" + estimate["markdown"] + "\n"
    if decode:
        text += (f"\nDecode + resample to 16 kHz, {decode['clips']} synthetic ShEMO-format clips "
                 f"({decode['audio_seconds'] / 3600:.2f} h), {decode['workers']} processes: "
                 f"**{decode['decode_clips_per_s']:.0f} clips/s**; with the audio-cache writes "
                 f"{decode['first_pass_clips_per_s']:.0f} clips/s; second pass decoded "
                 f"{decode['second_pass_decoded']}.\n")
    if startup:
        text += (f"\nStart-up of one run on this machine's CPU, before its first step (full-size models; "
                 f"no CUDA initialisation): imports {startup['import_seconds']:.1f} s; NLI data + model "
                 f"{startup['nli_build_seconds']:.1f} s; SER with {startup['clips']} clips: audio + model "
                 f"{startup['ser_build_seconds']:.1f} s, stored CNN features "
                 f"({startup['ser_feature_megabytes']:.0f} MB) {startup['ser_features_seconds']:.1f} s.\n")
    if posconv:
        from hw5.bench.posconv import posconv_markdown
        text += "\n" + posconv_markdown(posconv, name) + "\n"
    write_text_atomic(out_dir / "bench.md", text)
    print(f"bench: wrote {out_dir / 'bench.md'} and bench.json")
