"""The epoch and step a resumed run continues at, on SkyRL's real trainer (1ed499c), with and without our patch.

tests/support/skyrl_resume_driver.py runs RayPPOTrainer.train in .venv-skyrl: an uninterrupted run of
3 epochs x 3 steps, then for each preemption point P a run that checkpoints every step (SkyRL's own
save_checkpoints) and is preempted while training step P, and a `resume_mode=latest` run that loads
global_step_{P-1} (SkyRL's own load_checkpoints, with the data loader state) and trains to the end.
Only what needs GPUs or a Ray cluster is faked (see the driver's docstring). The trainer module is the
pinned commit's file (the wheel's, byte-identical) with docker/patches applied by the Dockerfile's
own script, or that file unpatched, whose wrong epochs are asserted as the bug they are.
"""
from __future__ import annotations

import json
import subprocess
from collections import Counter

import pytest

from tests.support.paths import REPO_ROOT
from tests.support.skyrl_trainer import (
    SKYRL_VENV_PYTHON,
    apply_patches,
    checkout_with_pinned_trainer,
    needs_skyrl_venv,
)

pytestmark = needs_skyrl_venv

EPOCHS, PROMPTS, STEPS_PER_EPOCH = 3, 6, 3  # the driver's train batch is 2 prompts
# Resumed from step 1 (inside epoch 0), 3 (the end of epoch 0), 6 (the end of epoch 1), 7 (inside epoch 2).
PREEMPT_AT = (2, 4, 7, 8)
DRIVER = REPO_ROOT / "tests" / "support" / "skyrl_resume_driver.py"
# Our patch's start (the epoch of the loaded step) and upstream #589's (global_step // steps per epoch),
# the one expression that differs: the upstream variant is our patched file with this line replaced.
OURS = "start_epoch = max(self.global_step - 1, 0) // len(self.train_dataloader)"
UPSTREAM_589 = "start_epoch = self.global_step // len(self.train_dataloader)"


def uninterrupted(first_step: int = 1) -> list[tuple[int, int]]:
    """(global step, epoch) of an uninterrupted run from `first_step` on."""
    return [(step, (step - 1) // STEPS_PER_EPOCH) for step in range(first_step, EPOCHS * STEPS_PER_EPOCH + 1)]


VARIANTS = ("patched", "unpatched", "upstream-589-start")


def trainer_file(root, variant: str):
    """The pinned trainer.py in a checkout under `root`, as `variant` has it."""
    trainer = checkout_with_pinned_trainer(root / "checkout")
    if variant != "unpatched":
        applied = apply_patches(root / "checkout")
        assert applied.returncode == 0, applied.stderr
    if variant == "upstream-589-start":
        text = trainer.read_text()
        assert text.count(OURS) == 1
        trainer.write_text(text.replace(OURS, UPSTREAM_589))
    return trainer


@pytest.fixture(scope="module")
def trainer_runs(tmp_path_factory):
    """variant -> the driver's result. The three drivers run side by side, once, on first use."""
    done = {}

    def run(variant: str) -> dict:
        if not done:
            started = {}
            for name in VARIANTS:
                root = tmp_path_factory.mktemp(name)
                started[name] = subprocess.Popen(
                    [str(SKYRL_VENV_PYTHON), str(DRIVER), str(trainer_file(root, name)), str(root / "work"),
                     str(EPOCHS), str(PROMPTS), ",".join(map(str, PREEMPT_AT))],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                for name, process in started.items():
                    out, err = process.communicate(timeout=900)
                    assert process.returncode == 0, f"{name}: {err[-3000:]}"
                    done[name] = json.loads(out)
            finally:
                for process in started.values():
                    if process.poll() is None:
                        process.kill()
                        process.wait()
        return done[variant]

    return run


def steps(result: dict) -> list[tuple[int, int]]:
    return [(step, epoch) for step, epoch, _ in result["steps"]]


def test_the_driver_runs_skyrls_trainer_and_stubs_only_import_only_modules(trainer_runs):
    result = trainer_runs("patched")
    full = result["uninterrupted"]
    assert (full["steps_per_epoch"], full["total_training_steps"]) == (STEPS_PER_EPOCH, EPOCHS * STEPS_PER_EPOCH)
    assert steps(full) == uninterrupted()
    # Each epoch trains on every prompt once (SkyRL's StatefulDataLoader over PromptDataset, batches of 2).
    for epoch in range(EPOCHS):
        seen = Counter(p for _, e, prompts in full["steps"] if e == epoch for p in prompts)
        assert seen == Counter(str(i) for i in range(PROMPTS))
    # What was stubbed is only what .venv-skyrl lacks and train() never reaches (a reach raises).
    assert set(result["stubbed"]) <= {"transformers", "datasets", "fastapi", "uvicorn", "pydantic", "skyrl_gym"}


@pytest.mark.parametrize("point", PREEMPT_AT)
def test_the_patched_trainer_resumes_at_the_step_and_epoch_an_uninterrupted_run_has(trainer_runs, point):
    result = trainer_runs("patched")
    full, before, after = result["uninterrupted"], result[f"before-{point}"], result[f"after-{point}"]
    assert before["preempted"] and steps(before) == uninterrupted()[:point - 1]
    assert after["resumed_from"] == [f"global_step_{point - 1}"]
    assert steps(after) == uninterrupted(point)
    # Together: the same steps as one uninterrupted run, none twice, none past the total.
    assert steps(before) + steps(after) == steps(full)
    # The resumed epoch continues with the batches it had left (the restored data loader state).
    resumed_epoch = (point - 2) // STEPS_PER_EPOCH
    left = [s for s in full["steps"] if s[1] == resumed_epoch and s[0] >= point]
    assert [s for s in after["steps"] if s[1] == resumed_epoch] == left


# The bug, as the pinned commit has it: the loop restarts at epoch 0 after the resume and runs every epoch
# again from there. Inside epoch 0, and from its very end, that happens to be right; later it is not.
UNPATCHED = {
    2: uninterrupted(2),
    4: uninterrupted(4),
    7: [(7, 1), (8, 1), (9, 1), (10, 2), (11, 2), (12, 2)],  # epoch 1 again: 3 steps more than the run has
    8: [(8, 0), (9, 0), (10, 1), (11, 1), (12, 1), (13, 2), (14, 2), (15, 2)],  # 6 more, epochs from 0
}
# Upstream #589's start with this data loader: a resume from an epoch's last step skips the next epoch.
UPSTREAM = {
    2: uninterrupted(2),
    4: [(4, 2), (5, 2), (6, 2)],  # epoch 1 never trained
    7: [],  # epoch 2 never trained
    8: uninterrupted(8),
}


@pytest.mark.parametrize("point", PREEMPT_AT)
def test_the_unpatched_trainer_restarts_its_epochs_at_0(trainer_runs, point):
    after = trainer_runs("unpatched")[f"after-{point}"]
    assert after["resumed_from"] == [f"global_step_{point - 1}"]
    assert steps(after) == UNPATCHED[point]
    assert (steps(after) == uninterrupted(point)) == (point <= STEPS_PER_EPOCH + 1)


@pytest.mark.parametrize("point", PREEMPT_AT)
def test_upstreams_start_would_skip_an_epoch_after_a_resume_from_an_epochs_last_step(trainer_runs, point):
    after = trainer_runs("upstream-589-start")[f"after-{point}"]
    assert after["resumed_from"] == [f"global_step_{point - 1}"]
    assert steps(after) == UPSTREAM[point]
