"""Run SkyRL's real RayPPOTrainer.train on CPU through a preemption and a `resume_mode=latest` resume.

Runs in .venv-skyrl (SkyRL 0.2.0 = 1ed499c, Ray 2.48.0, CPU torch, torchdata and tqdm as SkyRL's lock
has them), started by tests/image/test_skyrl_resume_epoch.py:

    python skyrl_resume_driver.py TRAINER_PY WORK_DIR EPOCHS PROMPTS PREEMPT_AT,...   (prints JSON)

TRAINER_PY is a copy of skyrl_train/trainer.py (patched or not); it is loaded as its own module, its
imports resolve to the installed skyrl_train. What is real: SkyRL's config (ppo_base_config composed by
Hydra), RayPPOTrainer.__init__, train(), save_checkpoints(), load_checkpoints() (trainer_state.pt,
data.pt, latest_ckpt_global_step.txt, validate_consistency_for_latest_checkpoint) and
cleanup_old_checkpoints, build_dataloader's StatefulDataLoader (torchdata 0.11.0, without worker
processes: see config()), PromptDataset's __getitem__/collate_fn, prepare_generator_input. What is faked, at the boundaries
that need GPUs or a Ray cluster: the policy's Ray actor group (FSDP workers: their checkpoint shards
are not written), the inference engines, `ray.get` in the trainer module (no cluster: it returns
what it is given), the generate/forward/train steps, the tokenizer and the tracker. The data set is
PROMPTS rows held in memory (PromptDataset's own __init__ reads parquet through HF datasets).

Modules the trainer's import closure names but train() never reaches here (transformers, datasets,
fastapi, uvicorn, pydantic, skyrl_gym: the HTTP endpoint, the gym, the tokenizer type) are import-only
stubs; any use of one raises, so the run would fail, not pass, if train() reached one.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import json
import sys
import types
from pathlib import Path

IMPORT_ONLY = ("transformers", "datasets", "fastapi", "uvicorn", "pydantic", "skyrl_gym")
TRAIN_BATCH = 2


# ------------------------------------------------------------------ import-only stubs
class _Unreachable(type):
    def __getattr__(cls, attr):
        if attr.startswith("_"):  # typing's and hasattr's probes
            raise AttributeError(attr)
        raise AssertionError(f"{cls.__module__}.{cls.__name__}.{attr} reached: an import-only stub")


def _stub_class(module: str, name: str) -> type:
    def refuse(self, *args, **kwargs):
        raise AssertionError(f"{module}.{name} used: an import-only stub (the driver's fakes missed a path)")
    return _Unreachable(name, (), {"__module__": module, "__init__": refuse})


class _ImportOnlyFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves IMPORT_ONLY modules (and their submodules) that are not installed as stub modules."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] not in IMPORT_ONLY:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []
        module.__getattr__ = lambda attr: _stub_class(spec.name, attr)
        return module

    def exec_module(self, module):
        pass


def install_import_only_stubs() -> list[str]:
    missing = [name for name in IMPORT_ONLY if importlib.util.find_spec(name) is None]
    if missing:
        sys.meta_path.append(_ImportOnlyFinder())
    return missing


# ------------------------------------------------------------------ fakes at the GPU / cluster boundary
class Preempted(Exception):
    """What a lost node does to the driver mid-step."""


class FakeActorGroup:
    """PPORayActorGroup of the policy: FSDP workers on GPUs. Checkpoint save/load calls are recorded."""

    def __init__(self):
        rank = types.SimpleNamespace(dp_size=1)
        self.actor_infos = [types.SimpleNamespace(rank=rank)]
        self.calls = []

    def async_run_ray_method(self, kind, method, *args, **kwargs):
        self.calls.append((method, kwargs.get("ckpt_dir")))
        return []

    def backload_to_gpu(self, *args, **kwargs):
        pass

    def offload_to_cpu(self, *args, **kwargs):
        pass


class FakeEngines:
    """InferenceEngineClient (vLLM/SGLang engines on GPUs)."""

    async def sleep(self, *args, **kwargs):
        pass

    async def wake_up(self, *args, **kwargs):
        pass


class FakeTracker:
    def __init__(self):
        self.logged = []

    def log(self, payload, step, commit=False):
        self.logged.append((step, dict(payload)))


class FakeTokenizer:
    def decode(self, ids):
        return ""


class FakeBatch(dict):
    """TrainingInputBatch: the loop pops "rewards" and metadata["uids"]."""

    def __init__(self, uids):
        super().__init__(sequences=list(uids), rewards=None)
        self.metadata = {"uids": list(uids)}
        self.prompts = sorted(set(uids))  # kept: the loop pops metadata["uids"] before the train step


class Rows:
    """PromptDataset.dataframe: a fresh row dict per access, as HF datasets gives (__getitem__ pops keys)."""

    def __init__(self, count):
        self.count = count

    def __len__(self):
        return self.count

    def __getitem__(self, item):
        return {"prompt": [{"role": "user", "content": f"prompt {item}"}], "env_class": "gsm8k"}


def prompt_dataset(count):
    from skyrl_train.dataset import PromptDataset

    dataset = PromptDataset.__new__(PromptDataset)  # its __init__ loads parquet files through HF datasets
    dataset.dataframe, dataset.prompt_key, dataset.env_class_key = Rows(count), "prompt", "env_class"
    return dataset


# ------------------------------------------------------------------ one run
def load_trainer_module(path: Path):
    spec = importlib.util.spec_from_file_location("skyrl_trainer_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.ray = types.SimpleNamespace(get=lambda refs: refs)  # no Ray cluster: see the docstring
    return module


def config(ckpt_path: Path, epochs: int, resume: bool):
    from skyrl_stack.smoke.skyrl import compose, skyrl_config_dir

    return compose(skyrl_config_dir(), [
        f"trainer.epochs={epochs}", f"trainer.train_batch_size={TRAIN_BATCH}",
        "trainer.ckpt_interval=1", f"trainer.ckpt_path={ckpt_path}",
        f"trainer.resume_mode={'latest' if resume else 'none'}",
        "trainer.eval_interval=-1",  # no eval data set here
        # Read only by build_dataloader here (the generator is faked): num_workers 0 instead of 8. With 8
        # forked workers per epoch, 9 trainers in one process on a loaded 2-core machine took minutes and
        # once hung in a worker start; the restored loader's steps and epochs were the same either way.
        "generator.enable_http_endpoint=true",
    ])


def run(module, ckpt_path: Path, epochs: int, prompts: int, preempt_at: int | None, resume: bool) -> dict:
    from skyrl_train.utils import trainer_utils

    cfg = config(ckpt_path, epochs, resume)
    trainer = module.RayPPOTrainer(cfg=cfg, tracker=FakeTracker(), tokenizer=FakeTokenizer(),
                                   train_dataset=prompt_dataset(prompts), inference_engine_client=FakeEngines(),
                                   generator=None)
    trainer.policy_model = FakeActorGroup()
    trainer.init_weight_sync_state = lambda: None
    trainer.sync_policy_weights_to_inference_engines = lambda: []
    # The node-wide part runs a Ray task on each node; the driver's own cleanup is SkyRL's function.
    trainer._cleanup_old_checkpoints = lambda: trainer_utils.cleanup_old_checkpoints(
        cfg.trainer.ckpt_path, cfg.trainer.max_ckpts_to_keep)
    trained = {}

    async def generate(generator_input):
        return {"response_ids": [[0]]}

    def train_step(batch):
        if trainer.global_step == preempt_at:
            raise Preempted(trainer.global_step)
        trained[trainer.global_step] = batch.prompts
        return {"policy_loss": 0.0}

    trainer.generate = generate
    trainer.postprocess_generator_output = lambda output, uids: output
    trainer.convert_to_training_input = lambda output, uids: FakeBatch(uids)
    trainer.fwd_logprobs_values_reward = lambda batch: batch
    trainer.compute_advantages_and_returns = lambda batch: batch
    trainer.train_critic_and_policy = train_step
    preempted = False
    try:
        trainer.train()
    except Preempted:
        preempted = True
    loaded = [Path(d).parent.name for method, d in trainer.policy_model.calls if method == "load_checkpoint"]
    return {
        "preempted": preempted,
        "resumed_from": loaded,
        "steps_per_epoch": len(trainer.train_dataloader),
        "total_training_steps": trainer.total_training_steps,
        # (global step, epoch) as the loop logs them, with the prompts that step trained on.
        "steps": [[step, payload["trainer/epoch"], trained[step]] for step, payload in trainer.tracker.logged],
    }


def main(argv: list[str]) -> None:
    trainer_py, work, epochs, prompts, points = Path(argv[0]), Path(argv[1]), int(argv[2]), int(argv[3]), argv[4]
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # skyrl_stack (the smoke suite's compose)
    stubbed = install_import_only_stubs()
    module = load_trainer_module(trainer_py)
    result = {"stubbed": stubbed, "uninterrupted": run(module, work / "full", epochs, prompts, None, False)}
    for point in (int(p) for p in points.split(",")):
        ckpt = work / f"preempt-{point}"
        result[f"before-{point}"] = run(module, ckpt, epochs, prompts, point, True)
        result[f"after-{point}"] = run(module, ckpt, epochs, prompts, None, True)
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1:])
