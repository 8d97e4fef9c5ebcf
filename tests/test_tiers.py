"""The fast tier (`make test`) keeps its budget: an unmarked test over the limit fails it."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

from conftest import REPO

CASES = '''import time, pytest

def test_slow_unmarked():
    time.sleep(0.6)

@pytest.mark.slow
def test_slow_marked():
    time.sleep(0.6)

def test_quick():
    pass
'''


def test_an_unmarked_test_over_the_limit_fails_the_fast_tier(tmp_path):
    shutil.copy(REPO / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_cases.py").write_text(CASES)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n  slow: slow\n")
    run = lambda **env: subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                                       capture_output=True, text=True, cwd=tmp_path, env={**os.environ, **env})
    fast = run(HW5_FAST_TIER_LIMIT_S="0.3")
    assert fast.returncode == 1 and "1 failed, 2 passed" in fast.stdout
    assert "test_slow_unmarked took" in fast.stdout and "mark it @pytest.mark.slow" in fast.stdout
    everything = run(HW5_FAST_TIER_LIMIT_S="")
    assert everything.returncode == 0 and "3 passed" in everything.stdout
