"""skyrl-ckpt-guard: a resume never loads a partial checkpoint (issue 16, 3b).

The checkpoints are SkyRL's layout written with torch.save (tests/support/skyrl_checkpoints.py);
what SkyRL would do with the folder afterwards is SkyRL's own
validate_consistency_for_latest_checkpoint and list_checkpoint_dirs, run in .venv-skyrl.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.support.paths import REPO_ROOT
from tests.support.skyrl_checkpoints import save_step, skyrl_accepts

GUARD = REPO_ROOT / "docker" / "scripts" / "bin" / "skyrl-ckpt-guard"
INTERVAL = 5


def guard(root: Path) -> str:
    out = subprocess.run([sys.executable, str(GUARD), str(root)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def pointer(root: Path) -> str | None:
    path = root / "latest_ckpt_global_step.txt"
    return path.read_text() if path.exists() else None


def test_a_complete_latest_checkpoint_is_left_as_it_is(tmp_path):
    for step in (5, 10):
        save_step(tmp_path, step, world=4)
    assert "global_step_10 is complete: the resume loads it" in guard(tmp_path)
    assert pointer(tmp_path) == "10"
    assert skyrl_accepts(tmp_path, INTERVAL) == {"dirs": ["global_step_10", "global_step_5"], "error": None, "step": 10}


def test_a_pointer_to_a_step_whose_other_node_shards_never_arrived_falls_back(tmp_path):
    """The preemption case: the head's pointer and state uploaded, node 1's ranks (2, 3) did not."""
    save_step(tmp_path, 5, world=4)
    save_step(tmp_path, 10, world=4)
    save_step(tmp_path, 15, world=4, lost_ranks=(2, 3))
    out = guard(tmp_path)
    assert "global_step_15 is incomplete (policy/ world size 4 lacks model rank 2, optim rank 2, extra_state rank 2, " \
           "model rank 3, optim rank 3, extra_state rank 3)" in out
    assert "pointer rewritten to 10" in out
    assert pointer(tmp_path) == "10"
    assert (tmp_path / "incomplete" / "global_step_15" / "policy").is_dir()
    assert skyrl_accepts(tmp_path, INTERVAL) == {"dirs": ["global_step_10", "global_step_5"], "error": None, "step": 10}


def test_moving_incomplete_steps_aside_is_what_makes_skyrl_accept_the_fallback(tmp_path):
    """Two cut checkpoints in a row (a second preemption before the re-save uploaded): rewriting the
    pointer alone leaves a folder two intervals past it, which SkyRL's own check refuses."""
    save_step(tmp_path, 10, world=2)
    save_step(tmp_path, 15, world=2, lost_ranks=(1,))
    save_step(tmp_path, 20, world=2, lost_ranks=(1,))
    pointer_only = tmp_path.parent / "pointer-only"
    subprocess.run(["cp", "-a", str(tmp_path), str(pointer_only)], check=True)
    (pointer_only / "latest_ckpt_global_step.txt").write_text("10")
    assert "Inconsistent checkpoint folder" in skyrl_accepts(pointer_only, INTERVAL)["error"]

    out = guard(tmp_path)
    assert out.count("is incomplete") == 2 and pointer(tmp_path) == "10"
    assert skyrl_accepts(tmp_path, INTERVAL) == {"dirs": ["global_step_10"], "error": None, "step": 10}


def test_a_cut_shard_file_counts_as_missing(tmp_path):
    save_step(tmp_path, 5, world=2)
    folder = save_step(tmp_path, 10, world=2)
    shard = folder / "policy" / "model_world_size_2_rank_1.pt"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    assert "has cut files model_world_size_2_rank_1.pt" in guard(tmp_path)
    assert pointer(tmp_path) == "5"


def test_missing_trainer_or_data_state_or_world_size_mismatch_is_incomplete(tmp_path):
    save_step(tmp_path, 5, world=2)
    (save_step(tmp_path, 10, world=2) / "data.pt").unlink()
    fifteen = save_step(tmp_path, 15, world=2)
    (fifteen / "policy" / "fsdp_config.json").write_text('{"world_size": 4}')
    out = guard(tmp_path)
    assert "global_step_10 is incomplete (data.pt missing)" in out
    assert "global_step_15 is incomplete (policy/fsdp_config.json names another world size than the shards (2))" in out
    assert pointer(tmp_path) == "5"


def test_a_lost_pointer_upload_is_rewritten_to_the_newest_complete_step(tmp_path):
    save_step(tmp_path, 5, world=2)
    save_step(tmp_path, 10, world=2, pointer=False)
    assert "the pointer names 5; the newest complete checkpoint is global_step_10: pointer rewritten to 10" in guard(tmp_path)
    assert skyrl_accepts(tmp_path, INTERVAL)["step"] == 10


def test_only_a_cut_first_checkpoint_means_a_fresh_start_as_skyrl_latest_does(tmp_path):
    save_step(tmp_path, 5, world=2, lost_ranks=(1,))
    out = guard(tmp_path)
    assert "no complete checkpoint (the pointer names 5): removed the pointer; training starts from scratch" in out
    # SkyRL's latest without a pointer file: "No checkpoint found, starting training from scratch".
    assert skyrl_accepts(tmp_path, INTERVAL) == {"dirs": [], "error": None, "step": None}


def test_no_checkpoint_folder_yet_is_a_fresh_start(tmp_path):
    assert "holds no checkpoints yet" in guard(tmp_path / "run-1")


def test_bad_usage_is_exit_2():
    out = subprocess.run([sys.executable, str(GUARD)], capture_output=True, text=True)
    assert out.returncode == 2 and "skyrl-ckpt-guard CKPT_DIR" in out.stderr


# Any subset of files lost across three checkpoints: the guard's choice is the newest step with every
# file (counted here from the layout, independently of the guard's code), and nothing newer stays.
FILES = ("data.pt", "trainer_state.pt", "policy/fsdp_config.json",
         *(f"policy/{kind}_world_size_2_rank_{rank}.pt" for kind in ("model", "optim", "extra_state") for rank in (0, 1)))


@settings(derandomize=True, database=None, deadline=None, max_examples=40)
@given(lost=st.lists(st.sets(st.sampled_from(FILES)), min_size=3, max_size=3),
       pointed=st.sampled_from([None, 5, 10, 15]))
def test_the_guard_always_leaves_the_newest_complete_step(tmp_path_factory, lost, pointed):
    root = tmp_path_factory.mktemp("ckpts")
    for step, gone in zip((5, 10, 15), lost):
        folder = save_step(root, step, world=2, pointer=False)
        for name in gone:
            (folder / name).unlink()
    if pointed is not None:
        (root / "latest_ckpt_global_step.txt").write_text(str(pointed))
    guard(root)
    complete = [step for step, gone in zip((5, 10, 15), lost) if not gone]
    expected = str(max(complete)) if complete else None
    assert pointer(root) == expected
    remaining = sorted(int(p.name.split("_")[-1]) for p in root.glob("global_step_*"))
    assert not remaining or max(remaining) == max(complete)
