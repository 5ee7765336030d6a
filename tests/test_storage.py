"""--storage s3://bucket/prefix against a local S3 server (moto, on 127.0.0.1): Ray's
experiment state and every checkpoint go to the bucket, the tables to results/<name>/, and
after a SIGTERM and the deletion of every local Ray folder, --resume continues from the
bucket with nothing trained twice."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from clusterutil import wait_for
from s3util import s3_keys, s3_server
from searchutil import ROOT, journal
from test_cluster import ENDED, small_space

pytestmark = pytest.mark.slow

BUCKET = "tune-test"


def _one_ended(folder: Path) -> bool:
    return folder.is_dir() and any(
        e["kind"] == "end" for lines in journal(folder).values() for e in lines
    )


def _search(env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "search.py"), "--gpus", "0", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def short_tmp():
    """Makes temp folders for RAY_TMPDIR (short: Ray's socket paths live under it); all
    removed after the test, passed or failed."""
    made = []
    yield lambda: made.append(tempfile.mkdtemp(prefix="tm-s3-", dir="/tmp")) or made[-1]
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


def test_s3_storage_resumes_from_the_bucket_alone(tmp_path, short_tmp):
    results = tmp_path / "results"
    folder = results / "s3"
    space = small_space(tmp_path, epochs=4, grace=4, samples=3)  # 2 at once: the 3rd waits
    storage = f"s3://{BUCKET}/runs"
    with s3_server(BUCKET, tmp_path / "moto.log") as s3:
        ray_tmp = short_tmp()  # Ray's local folders
        env = {**os.environ, **s3, "TUNE_MNIST_RESULTS": str(results), "RAY_TMPDIR": ray_tmp}
        first = _search(env, "--space", str(space), "--name", "s3", "--storage", storage)
        try:
            wait_for(lambda: _one_ended(folder), 600, "a trial's end", lambda: first.poll() is None)
            first.send_signal(signal.SIGTERM)
            _, err = first.communicate(timeout=300)
        finally:
            if first.poll() is None:
                first.kill()
        assert first.returncode == 143, err[-3000:]
        keys = s3_keys(s3, BUCKET, "runs/s3/")
        assert any("/experiment_state" in k for k in keys), keys
        assert any("/checkpoint_" in k and k.endswith("state.pt") for k in keys), keys
        assert (folder / "trials.parquet").is_file()  # the tables stay in results/<name>
        before = journal(folder)
        ended = {t for t, lines in before.items() if any(e["kind"] == "end" for e in lines)}
        assert 0 < len(ended) < 3  # the resume has work left
        shutil.rmtree(ray_tmp)  # every local Ray folder: only the bucket knows the trials
        assert not (results / ".ray").exists()
        env["RAY_TMPDIR"] = short_tmp()
        again = _search(env, "--resume", "--name", "s3", "--storage", storage, "--no-report")
        try:
            _, err = again.communicate(timeout=900)
        finally:
            if again.poll() is None:
                again.kill()
        assert again.returncode == 0, err[-3000:]
    after = journal(folder)
    for trial in ended:  # an ended trial: not one line more
        assert after[trial] == before[trial]
    for trial, lines in after.items():  # nothing trained twice: each epoch reported once
        epochs = [e["result"]["epoch"] for e in lines if e["kind"] == "epoch"]
        assert epochs == sorted(set(epochs)), (trial, epochs)
    trials = pd.read_parquet(folder / "trials.parquet")
    assert len(trials) == 3 and set(trials["status"]) <= ENDED - {"error"}
    for trial in set(before) - ended:  # a running one continued from its newest checkpoint
        done = [e["result"]["epoch"] for e in before[trial] if e["kind"] == "epoch"]
        new = [e["result"] for e in after[trial][len(before[trial]) :] if e["kind"] == "epoch"]
        # (or replayed: trained before the SIGTERM, its report recovered from its checkpoint)
        # (an over-budget trial started just before the SIGTERM reports its refusal now:
        # nothing trained; seen once a reused worker had started it at once)
        fresh = [r for r in new if not r.get("replayed") and not r["over_budget"]]
        assert all(r["start_epoch"] >= max(done, default=0) for r in fresh), (trial, done, new)
