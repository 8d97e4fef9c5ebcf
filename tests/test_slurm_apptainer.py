"""SLURM jobs inside the hw5 image with Apptainer, for real: the real apptainer (Debian sid's, on the local
cluster's node through slurm/local_cluster.sh's SLURM_APPTAINER=1) runs `hw5:ci` as a .sif made the way
docker/build.sh --sif makes it, submitted by a non-root user from its own clone. What must hold (issue:
Apptainer for real):
(a) launcher -> sbatch -> `apptainer exec` of the .sif -> metrics.json on the host, the user's -> aggregate.py;
(b) USR2 mid-training -> a requeue from the host side -> the metrics of an uninterrupted run;
(c) the image's ENV cannot shadow what the launcher passes, and provenance names the code that ran;
(d) a .sif from an older commit -> refused before submission;
(e) scancel leaves no process behind.
Required when HW5_REQUIRE_SLURM, HW5_REQUIRE_DOCKER and HW5_REQUIRE_APPTAINER are 1 (CI).
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from container_support import (Site, as_user, built_sif, cluster_problem, engine_problem, head, job_ids_of,
                               launcher_python, need, owner, run, sif_labels, training, usr2_mid_training,
                               write_container_profile)
from launch_support import cmdline, comparable, job_log, latest_record, metrics, scratch_dir, wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.docker, pytest.mark.apptainer]
SLICE = ("nli-full", "ser-mean")


def apptainer_problem() -> str | None:
    if shutil.which("apptainer") is None:
        return "no apptainer on PATH (SLURM_APPTAINER=1 bash slurm/local_cluster.sh start)"
    out = run(["apptainer", "--version"], timeout=60)
    return None if out.returncode == 0 else f"apptainer does not run: {out.stderr.strip()}"


@pytest.fixture(scope="module")
def site(data_dir):
    need(cluster_problem(), "HW5_REQUIRE_SLURM")
    need(engine_problem(), "HW5_REQUIRE_DOCKER")
    need(apptainer_problem(), "HW5_REQUIRE_APPTAINER")
    sif = built_sif()
    with scratch_dir("hw5-apptainer-slurm-") as root:
        site = Site(root, data_dir, "apptainer", str(sif), sif=sif, sif_id=_sif_id(sif))
        # the lie this must prevent: the user's checkout first on the path of the shell that launches
        site.env["PYTHONPATH"] = ":".join(filter(None, [str(site.tree), site.env.get("PYTHONPATH")]))
        yield site
        site.cancel_leftovers()


def _sif_id(sif: Path) -> str:
    header = run(["apptainer", "sif", "header", str(sif)], timeout=60).stdout
    return next(line.split(":", 1)[1].strip() for line in header.splitlines() if line.strip().startswith("ID:"))


@pytest.fixture(scope="module")
def smoke_slice(site) -> Path:
    return site.submit_and_wait("slice", "--only", ",".join(SLICE), "--seeds", "0,1")


def test_the_sif_keeps_the_images_revision_label(site):
    assert sif_labels(site.sif)["org.opencontainers.image.revision"] == head()


def test_dry_run_shows_the_sif_its_id_and_revision_and_checks_it(site):
    results, out = site.launch("dry", "--only", "nli-full", "--seeds", "0", "--dry-run")
    assert out.returncode == 0, out.stdout
    assert f"image: apptainer image {site.sif} (id {site.sif_id}, revision {head()})" in out.stdout
    assert "image check: ok" in out.stdout and "dry run: nothing submitted" in out.stdout


def test_a_smoke_slice_runs_in_the_sif_as_the_user_and_aggregates(site, smoke_slice):
    for experiment in SLICE:
        for seed in (0, 1):
            m = metrics(smoke_slice, experiment, seed)
            assert m, job_log(latest_record(smoke_slice, experiment, seed))
            path = smoke_slice / "smoke" / experiment / f"seed-{seed}" / "metrics.json"
            assert owner(path) == site.user.pw_name
            prov = m["provenance"]
            # the .sif's hw5 ran, though the launching shell had the checkout first on PYTHONPATH
            assert prov["code"]["source"] == "image" and "site-packages" in prov["code"]["path"], prov
            assert prov["git_sha"] == head()
            assert prov["container"] == {"kind": "apptainer", "image": str(site.sif), "id": site.sif_id,
                                         "revision": head()}
    report = as_user([launcher_python()[0], str(site.tree / "aggregate.py"), "--smoke", "--results",
                      str(smoke_slice), "--experiments", str(site.grid), "--seeds", "0,1"], site.env, cwd=site.tree)
    assert report.returncode == 0, report.stdout + report.stderr
    assert "ser-mean" in (smoke_slice / "smoke" / "report.md").read_text()


def test_usr2_mid_training_requeues_from_the_host_and_matches_an_uninterrupted_run(site, smoke_slice):
    log, resumed = usr2_mid_training(site)
    assert "passing it to the step" in log and "got SIGUSR2" in log, log
    assert "requeueing job" in log and "restart 1" in log and "resumed from" in log and resumed, log
    assert comparable(resumed) == pytest.approx(comparable(metrics(smoke_slice, "nli-full", 0)), rel=1e-6, abs=1e-9)


def test_the_images_env_cannot_shadow_the_launchers_values(site):
    profile = write_container_profile(site.root / "checkout.yaml", "apptainer", str(site.sif), code="checkout")
    cache = site.root / "cache-checkout"       # the image's ENV says HW5_CACHE_DIR=/cache/hw5
    results = site.submit_and_wait("checkout", "--only", "nli-full", "--seeds", "1", profile=profile,
                               env={**site.env, "HW5_CACHE_DIR": str(cache)})
    m = metrics(results, "nli-full", 1)
    assert m, job_log(latest_record(results, "nli-full", 1))
    assert m["provenance"]["code"] == {"source": "checkout", "path": str(site.tree)}
    assert m["provenance"]["git_sha"] == head()
    assert any(cache.rglob("*.safetensors")) and owner(cache) == site.user.pw_name


def test_a_sif_from_an_older_commit_is_refused_before_submission(site):
    tree, later = site.later_clone("later")
    results, out = site.launch("later", "--only", "nli-full", "--seeds", "0", tree=tree)
    assert out.returncode == 2, out.stdout
    assert f"was built from {head()[:12]}, but the checkout is at {later[:12]}" in out.stdout
    assert f"bash docker/build.sh -t hw5:latest --sif {site.sif}" in out.stdout and "nothing submitted" in out.stdout
    assert job_ids_of(results) == []


def test_scancel_leaves_no_process_behind(site):
    results, out = site.launch("cancel", "--only", "nli-full", "--seeds", "1", grid=site.long_grid())
    assert out.returncode == 0, out.stdout
    record = training(results, "nli-full", 1)
    assert _job_processes(site, record), "the job's processes should be visible while it trains"
    run(["scancel", record["job_id"]], timeout=30)
    started = time.time()
    wait_until(lambda: not _job_processes(site, record), 30, "the job's processes to end")
    assert time.time() - started < 30
    assert metrics(results, "nli-full", 1) is None


def _job_processes(site, record: dict) -> list[str]:
    """The user's processes of this job: apptainer's starter, squashfuse, Python."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/status"):
        try:
            uid = next(line.split()[1] for line in stat.read_text().splitlines() if line.startswith("Uid:"))
        except (OSError, StopIteration):
            continue
        text = cmdline(int(stat.parent.name))
        if uid == str(site.user.pw_uid) and (str(site.sif) in text or record["folder"].rsplit("/", 1)[0] in text
                                             or "squashfuse" in text):
            found.append(text)
    return found
