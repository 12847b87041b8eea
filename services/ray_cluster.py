"""Connecting to Ray: a running cluster by address, or a local Ray of our own (CLI, training, tests)."""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import ray

_PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Ray Train's placement-group cleaner asks the State API, which lives in the dashboard, whether the training
# controller is alive; a local Ray of ours runs without a dashboard, so it warns every few seconds of a run.
_DASHBOARD_ONLY_LOGGERS = ("ray.train.v2._internal.execution.controller.placement_group_cleaner",)


# Ray Train's training context logs every ray.train.report() at INFO on a logger named by its FILE path (so
# RunConfig's LoggingConfig, which filters "ray.train.*", misses it): one line per epoch repeating ours.
# The path is built from ray's folder, not found by import: every worker (Serve replicas too) runs this hook.
_PER_REPORT_LOGGERS = (str(Path(ray.__file__).parent / "train" / "v2" / "_internal" / "execution" / "context.py"),)


def quiet_ray_worker_loggers() -> None:
    """Worker setup hook of a local Ray: silence the warnings that only say the dashboard is not running,
    and Ray Train's per-report INFO line (our epoch line says the same)."""
    for name in _DASHBOARD_ONLY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for name in _PER_REPORT_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def start_ray(
    address: str | None = None,
    temp_dir: Path | None = None,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    worker_logs: bool = False,
) -> None:
    """Join the cluster at `address`, or start a local Ray in a session folder of our own whose workers
    can import this project (a source checkout need not be installed for Ray Train's workers).
    `worker_logs` forwards the workers' output to this process (training shows its epochs that way)."""
    if address:
        ray.init(address=address, log_to_driver=worker_logs, logging_level=logging.WARNING)
        return
    # A new local Ray turns on its token authentication by default and says so at WARNING on every start; it
    # is the behaviour we want, not a problem for the user to act on (an explicit RAY_AUTH_MODE still rules).
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    folder = temp_dir or Path(tempfile.mkdtemp(prefix="inctrl-ray-", dir="/tmp"))
    folder.mkdir(parents=True, exist_ok=True)
    python_path = os.pathsep.join(p for p in (str(_PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    ray.init(
        num_cpus=num_cpus or os.cpu_count(),
        num_gpus=num_gpus,
        _temp_dir=str(folder),
        include_dashboard=False,
        log_to_driver=worker_logs,
        runtime_env={
            "env_vars": {"PYTHONPATH": python_path},
            "worker_process_setup_hook": f"{__name__}.{quiet_ray_worker_loggers.__name__}",
        },
        logging_level=logging.WARNING,
    )
