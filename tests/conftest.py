import os
import subprocess
import sys
import warnings

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The test models are tiny: one intra-op thread is faster than two and immune to the stalls of
# spinning OpenMP workers when other processes (e.g. the DDP tests' children) share the cores.
torch.set_num_threads(1)
warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")


@pytest.fixture
def num_threads(request):
    """Intra-op threads for the test: 1, or the value given by ``parametrize(..., indirect=True)``;
    the previous count is restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(getattr(request, "param", 1))
    yield torch.get_num_threads()
    torch.set_num_threads(before)


@pytest.fixture
def trainer_kwargs(tmp_path):
    """Quiet, fast Trainer settings for tests."""
    return dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )


@pytest.fixture
def run_ddp_script(tmp_path):
    """Run a test script in a fresh interpreter (it starts its own DDP processes); return what it saved.

    The script gets the output path as its first argument, then ``args``.
    """

    def run(script, *args, timeout=300):
        out = tmp_path / f"out_{'_'.join(map(str, args))}.pt"
        proc = subprocess.run(
            [sys.executable, str(script), str(out), *map(str, args)],
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
        return torch.load(out, weights_only=False)

    return run


@pytest.fixture(scope="session")
def quickstart_run(tmp_path_factory):
    """The README's quickstart command, run once in a fresh directory with stdout captured (not a terminal).

    Returns ``(completed process, run directory)``.
    """
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cwd = tmp_path_factory.mktemp("quickstart")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    proc = subprocess.run(
        [sys.executable, "-m", "lit_repr", "fit", "--config", os.path.join(repo, "configs", "quickstart.yaml")],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc, cwd / "runs" / "quickstart" / "version_0"
