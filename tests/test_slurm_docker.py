"""SLURM jobs inside the hw5 image with the docker kind, for real: the local SLURM cluster starts each
job's step, slurm/docker_step.sh runs it in `hw5:ci` on the real Docker engine, submitted by a non-root
user from its own clone. What must hold (issue: the image under the scheduler):
(a) launcher -> sbatch -> the job in the image -> metrics.json on the host, the user's -> aggregate.py;
(b) USR2 mid-training -> a requeue from the host side -> the metrics of an uninterrupted run;
(c) scancel of a running job -> no container left within a few seconds;
(d) a commit after the image was built -> refused before submission, with the fix; after a rebuild the
    run goes, and provenance names that image and that commit;
(e) container.code: checkout -> the checkout's code runs, provenance says so, the launcher's paths win
    over the image's ENV.
Required when HW5_REQUIRE_SLURM=1 and HW5_REQUIRE_DOCKER=1 (CI); skipped with the reason elsewhere.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from container_support import (IMAGE, Site, as_user, base_image, built_image, cluster_problem, engine_env,
                               engine_problem, head, inspect, job_ids_of, launcher_python, need, owner, run,
                               training, usr2_mid_training, wait_gone, write_container_profile)
from launch_support import comparable, job_log, latest_record, metrics, scratch_dir, wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.docker]
SLICE = ("nli-full", "ser-mean")


@pytest.fixture(scope="module")
def site(data_dir):
    need(cluster_problem(), "HW5_REQUIRE_SLURM")
    need(engine_problem(), "HW5_REQUIRE_DOCKER")
    image = built_image()
    with scratch_dir("hw5-docker-slurm-") as root:
        site = Site(root, data_dir, "docker", IMAGE, image=image)
        yield site
        site.cancel_leftovers()
        left = run(["docker", "ps", "-aq", "--filter", "name=hw5-"], env=engine_env()).stdout.split()
        if left:
            run(["docker", "rm", "-f", *left], env=engine_env())


@pytest.fixture(scope="module")
def smoke_slice(site) -> Path:
    """(a)'s slice: 2 experiments x 2 seeds, in the image, submitted by the user."""
    return site.submit_and_wait("slice", "--only", ",".join(SLICE), "--seeds", "0,1")


def test_dry_run_shows_the_image_its_id_and_revision_and_checks_it(site):
    results, out = site.launch("dry", "--only", "nli-full", "--seeds", "0", "--dry-run")
    assert out.returncode == 0, out.stdout
    assert f"image: docker image {IMAGE} (id {site.image['Id']}, revision {head()})" in out.stdout
    assert f"image check: ok (its revision is the checkout's HEAD ({head()[:12]})" in out.stdout
    assert "dry run: nothing submitted" in out.stdout and job_ids_of(results) == []


def test_a_smoke_slice_runs_in_the_image_as_the_user_and_aggregates(site, smoke_slice):
    for experiment in SLICE:
        for seed in (0, 1):
            m = metrics(smoke_slice, experiment, seed)
            assert m, job_log(latest_record(smoke_slice, experiment, seed))
            path = smoke_slice / "smoke" / experiment / f"seed-{seed}" / "metrics.json"
            assert owner(path) == owner(path.parent) == site.user.pw_name
            prov = m["provenance"]
            # the image's own hw5 ran (site-packages, not the user's checkout), and says which image
            assert prov["code"]["source"] == "image" and "site-packages" in prov["code"]["path"], prov
            assert (prov["git_sha"], prov["git_dirty"]) == (head(), False)
            assert prov["container"] == {"kind": "docker", "image": IMAGE, "id": site.image["Id"],
                                         "revision": head()}
            assert prov["slurm_job_id"]
    report = as_user([launcher_python()[0], str(site.tree / "aggregate.py"), "--smoke", "--results", str(smoke_slice),
                      "--experiments", str(site.grid), "--seeds", "0,1"], site.env, cwd=site.tree)
    assert report.returncode == 0, report.stdout + report.stderr
    text = (smoke_slice / "smoke" / "report.md").read_text()
    assert "nli-full" in text and "ser-mean" in text and owner(smoke_slice / "smoke" / "report.md") == site.user.pw_name


def test_usr2_mid_training_requeues_from_the_host_and_matches_an_uninterrupted_run(site, smoke_slice):
    log, resumed = usr2_mid_training(site)
    assert "asked the host to requeue" in log and "requeueing job" in log and "restart 1" in log, log
    assert "resumed from" in log, log
    assert resumed and resumed["provenance"]["slurm_restart_count"] == "1", log
    assert comparable(resumed) == pytest.approx(comparable(metrics(smoke_slice, "nli-full", 0)), rel=1e-6, abs=1e-9)


def test_scancel_leaves_no_container_running(site):
    results, out = site.launch("cancel", "--only", "nli-full", "--seeds", "1", grid=site.long_grid())
    assert out.returncode == 0, out.stdout
    record = training(results, "nli-full", 1)
    name = f"hw5-nli-full-s1-{record['job_id']}"
    assert _containers(name) == [name]          # named after the job
    started = time.time()
    run(["scancel", record["job_id"]], timeout=30)
    wait_until(lambda: not _containers(name), 15, f"container {name} to go")
    assert time.time() - started < 15
    wait_gone([record["job_id"]], 60)
    assert metrics(results, "nli-full", 1) is None


def _containers(name: str) -> list[str]:
    out = run(["docker", "ps", "-a", "--filter", f"name=^{name}$", "--format", "{{.Names}}"], env=engine_env())
    return out.stdout.split()


def test_a_commit_after_the_build_is_refused_and_a_rebuild_runs_with_its_provenance(site):
    tree, later = site.later_clone("later")
    results, out = site.launch("later", "--only", "nli-full", "--seeds", "0", tree=tree)
    assert out.returncode == 2, out.stdout
    assert f"was built from {head()[:12]}, but the checkout is at {later[:12]}" in out.stdout
    assert f"rebuild it (bash docker/build.sh -t {IMAGE})" in out.stdout and "nothing submitted" in out.stdout
    assert job_ids_of(results) == []
    # the rebuild the message names, from that tree (a new tag: hw5:ci stays the tests' image)
    rebuilt = "hw5:ci-later"
    build = run(["bash", str(tree / "docker" / "build.sh"), "-t", rebuilt], timeout=900,
                env={**engine_env(), "DOCKER": "/usr/bin/docker", "BASE_IMAGE": base_image(),
                     "BUILD_ARGS": "--network host -q"})
    assert build.returncode == 0, build.stdout + build.stderr
    profile = write_container_profile(site.root / "later.yaml", "docker", rebuilt)
    done = site.submit_and_wait("rebuilt", "--only", "nli-full", "--seeds", "0", tree=tree, profile=profile)
    prov = metrics(done, "nli-full", 0)["provenance"]
    assert prov["git_sha"] == later and prov["code"]["source"] == "image"
    assert prov["container"] == {"kind": "docker", "image": rebuilt, "id": inspect(rebuilt)["Id"], "revision": later}


def test_code_checkout_runs_the_checkouts_code_and_the_launchers_paths_win(site):
    profile = write_container_profile(site.root / "checkout.yaml", "docker", IMAGE, code="checkout")
    cache = site.root / "cache-checkout"          # this run's own: the tiny model must be built here
    results = site.submit_and_wait("checkout", "--only", "nli-full", "--seeds", "1", profile=profile,
                               env={**site.env, "HW5_CACHE_DIR": str(cache)})
    m = metrics(results, "nli-full", 1)
    assert m, job_log(latest_record(results, "nli-full", 1))
    prov = m["provenance"]
    assert prov["code"] == {"source": "checkout", "path": str(site.tree)} and prov["git_sha"] == head()
    assert prov["container"]["revision"] == head()
    # the image's ENV says HW5_CACHE_DIR=/cache/hw5; the launcher's value won: the tiny model is here
    assert any(cache.rglob("*.safetensors")) and owner(cache) == site.user.pw_name
