"""`python tests/park_after_checkpoint.py ARGS...` runs `selfinstruct ARGS...` (also as torchrun's
script) with one change: after the trainer's checkpoint at step $PARK_AT_STEP, every process
touches $PARK_MARKER.rank<N> and then waits (rank 0's marker: the checkpoint is whole; rank 0
writes it, and another rank may get there first), as a job would stand when a preemption
comes, until it is killed or its parent is. A kill test waits for the marker and kills there,
mid-training for sure however fast the model trains (a tiny model runs a few steps between two
polls). The code under test is unchanged: the wait is a trainer callback added from outside."""

from __future__ import annotations

import os
import runpy
import sys
import time
from pathlib import Path

import transformers

STEP = int(os.environ["PARK_AT_STEP"])
MARKER = os.environ["PARK_MARKER"]


class ParkAfterCheckpoint(transformers.TrainerCallback):
    def on_save(
        self,
        args: transformers.TrainingArguments,
        state: transformers.TrainerState,
        control: transformers.TrainerControl,
        **kwargs: object,
    ) -> transformers.TrainerControl:
        # Called on every process; on rank 0, after the checkpoint's last file is written.
        if state.global_step == STEP:
            rank = os.environ.get("RANK", "0")
            Path(f"{MARKER}.rank{rank}").touch()
            # Until killed; and gone with its parent (a launcher's workers may sit in a session
            # of their own, out of reach of a kill of the launcher's group).
            parent = os.getppid()
            while os.getppid() == parent:
                time.sleep(0.1)
            os._exit(137)
        return control


_init = transformers.Trainer.__init__


def _init_and_park(self: transformers.Trainer, *args: object, **kwargs: object) -> None:
    _init(self, *args, **kwargs)
    self.add_callback(ParkAfterCheckpoint())


if __name__ == "__main__":
    transformers.Trainer.__init__ = _init_and_park  # type: ignore[method-assign]
    sys.argv = ["selfinstruct", *sys.argv[1:]]
    runpy.run_module("selfinstruct.cli", run_name="__main__", alter_sys=True)
