"""Optional experiment trackers (`--report_to`): TensorBoard or Weights & Biases. Algorithm-neutral.

metrics.jsonl is the record of a run and is always written by the scripts; a Reporter only mirrors
each record's numbers to a tracker. Neither tracker is a requirement of this project: each is
imported only when asked for, and a missing package is one error line before any model loads.
    none         the default: nothing but metrics.jsonl
    tensorboard  torch.utils.tensorboard event files in RUN_DIR/tensorboard (pip install tensorboard);
                 view with `tensorboard --logdir runs`
    wandb        a Weights & Biases run named after the run folder (pip install wandb); the project is
                 $WANDB_PROJECT (default "rlvr") and WANDB_MODE=offline keeps it on disk (`wandb sync` later)
"""

import importlib.util
import json
import math
import os
import sys

PACKAGES = {"none": None, "tensorboard": "tensorboard", "wandb": "wandb"}  # --report_to value -> package


def check_report_to(name: str) -> None:
    """One clear error line (SystemExit) for an unknown tracker or a tracker whose package is missing."""
    if name not in PACKAGES:
        raise SystemExit(f"error: unknown --report_to {name!r} ({', '.join(PACKAGES)})")
    package = PACKAGES[name]
    if package is not None and not installed(package):
        raise SystemExit(f"error: --report_to {name} needs the {package} package (pip install {package})")


def installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except ValueError:  # imported already, without a spec (a stand-in module in a test)
        return package in sys.modules


def numeric(record: dict) -> dict:
    """The finite numbers of a metrics record, without its step (bools, strings, None, NaN dropped)."""
    return {k: float(v) for k, v in record.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class Reporter:
    """Mirror metrics.jsonl records to a tracker: Reporter(report_to, run_dir, config).log(record), .close()."""

    def __init__(self, report_to: str, run_dir: str, config: dict):
        check_report_to(report_to)
        self.report_to, self.writer, self.run = report_to, None, None
        if report_to == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=os.path.join(run_dir, "tensorboard"))
            self.writer.add_text("config", "```\n" + json.dumps(config, indent=2, default=str) + "\n```")
        elif report_to == "wandb":
            import wandb

            self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "rlvr"),
                                  name=os.path.basename(os.path.normpath(run_dir)), dir=run_dir, config=config,
                                  mode=os.environ.get("WANDB_MODE"))

    def log(self, record: dict) -> None:
        """Log one metrics.jsonl record at its step."""
        values, step = numeric(record), int(record["step"])
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(key, value, step)
        if self.run is not None:
            self.run.log(values, step=step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.run is not None:
            self.run.finish()
        self.writer = self.run = None
