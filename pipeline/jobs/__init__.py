"""Config-file driven jobs: ``pipeline run CONFIG.toml`` (see ``configs/`` for commented examples).

``config`` validates the TOML file, ``runner`` plans (select, check, fingerprint) and runs the
exports with bounded concurrency, ``progress`` shows how far it got.
"""

from pipeline.jobs.config import JobConfig, load_config
from pipeline.jobs.runner import JobReport, Plan, describe_plan, plan_job, run_job

__all__ = ["JobConfig", "JobReport", "Plan", "describe_plan", "load_config", "plan_job", "run_job"]
