"""SkyRL's checkpoint layout, written as SkyRL 1ed499c writes it, and SkyRL's own checks on a folder.

The layout (file names and write order) is read from SkyRL at the pinned commit (the 0.2.0 wheel in
.venv-skyrl is byte-identical): skyrl_train/trainer.py::save_checkpoints (policy shards, then
data.pt, trainer_state.pt, last latest_ckpt_global_step.txt) and
distributed/fsdp_strategy.py::save_checkpoint (per rank `{model,optim,extra_state}_world_size_{W}_rank_{r}.pt`;
rank 0 also `fsdp_config.json` and `huggingface/`). The files are real torch.save archives.

skyrl_accepts runs SkyRL's own utils/trainer_utils.py functions in .venv-skyrl: the modules that
file imports for its other functions (transformers, torchdata, SkyRL's workers and generators)
are not installed there, so they are stand-in modules; the checked functions are SkyRL's code.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.support.paths import REPO_ROOT

SKYRL_PYTHON = REPO_ROOT / ".venv-skyrl" / "bin" / "python"
KINDS = ("model", "optim", "extra_state")


def save_step(root: Path, step: int, world: int, *, lost_ranks=(), pointer: bool = True) -> Path:
    """One checkpoint as SkyRL writes it; the shards of `lost_ranks` never arrive (a cut upload)."""
    import torch

    folder = root / f"global_step_{step}"
    policy = folder / "policy"
    policy.mkdir(parents=True, exist_ok=True)
    for rank in range(world):
        if rank in lost_ranks:
            continue
        for kind in KINDS:
            torch.save({"rank": rank, "step": step}, policy / f"{kind}_world_size_{world}_rank_{rank}.pt")
    if 0 not in lost_ranks:
        (policy / "fsdp_config.json").write_text(json.dumps({"fsdp_strategy": "fsdp2", "world_size": world}, indent=4))
        (policy / "huggingface").mkdir(exist_ok=True)
        (policy / "huggingface" / "config.json").write_text("{}")
    torch.save({"sampler": step}, folder / "data.pt")
    torch.save({"global_step": step, "config": {}}, folder / "trainer_state.pt")
    if pointer:
        (root / "latest_ckpt_global_step.txt").write_text(str(step))
    return folder


_SKYRL_CHECK = r"""
import json, os, sys, types
class Stub(types.ModuleType):
    def __getattr__(self, attr):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return type(attr, (), {})
for name in ("skyrl_train.workers.worker", "skyrl_train.generators.utils", "skyrl_train.generators.base",
             "transformers", "skyrl_train.dataset", "torchdata", "torchdata.stateful_dataloader"):
    sys.modules[name] = Stub(name)
from skyrl_train.utils import trainer_utils as t
root, interval = sys.argv[1], int(sys.argv[2])
pointer = os.path.join(root, "latest_ckpt_global_step.txt")
result = {"dirs": t.list_checkpoint_dirs(root), "error": None, "step": None}
if os.path.exists(pointer):
    # trainer.py::load_checkpoints, resume_mode latest: read the pointer, then validate the folder.
    step = int(open(pointer).read().strip())
    path = os.path.join(root, f"{t.GLOBAL_STEP_PREFIX}{step}")
    try:
        t.validate_consistency_for_latest_checkpoint(root, step, path, pointer, interval)
        result["step"] = step
    except ValueError as exc:
        result["error"] = str(exc)
print(json.dumps(result))
"""


def skyrl_accepts(root: Path, interval: int) -> dict:
    """What SkyRL's load_checkpoints would do first with `root`: {dirs, step (None: from scratch), error}."""
    if not SKYRL_PYTHON.exists():
        raise AssertionError(".venv-skyrl missing: run scripts/setup-dev.sh (SkyRL's own check cannot run)")
    out = subprocess.run([str(SKYRL_PYTHON), "-c", _SKYRL_CHECK, str(root), str(interval)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])
