"""The training plan for a cluster shape: batch sizes SkyRL accepts, checkpoints kept, disk needed.

Standard library only: `invoke render` must stay instant and this module is
imported by task_spec. SkyRL's rules (skyrl-train/skyrl_train/utils/utils.py at
the pinned commit 1ed499c, `validate_batch_sizes`, called by `validate_cfg`,
called by `entrypoints/main_base.py::main` before any training):

  per-GPU mini batch  = policy_mini_batch_size * n_samples_per_prompt // dp   (> 0)
  per-GPU mini batch  % micro_train_batch_size_per_gpu == 0
  per-GPU train batch = train_batch_size * n_samples_per_prompt // dp
  per-GPU train batch % per-GPU mini batch == 0,   train % mini == 0,   train >= dp

with dp = policy nodes x GPUs per node (fsdp2, sequence_parallel_size 1), and
`validate_cfg` refuses `max_ckpts_to_keep == 0`. SkyRL floors those divisions;
this plan asks for exact ones (mini x samples a multiple of dp), because an
uneven share is trimmed at run time (trainer.py `_remove_tail_data`): SkyRL
would accept it and silently train on fewer samples.
"""
from __future__ import annotations

from dataclasses import dataclass

from skyrl_stack.errors import StackError

# The seed's values (SkyRL v0.2.0 examples/gsm8k/run_gsm8k.sh); task_spec.GSM8K_GRPO holds them too.
SEED_TRAIN_BATCH = 1024
SEED_MINI_BATCH = 256
SEED_MICRO_BATCH = 64  # train and forward: a memory knob, never raised above the seed's
SEED_SAMPLES_PER_PROMPT = 5
# train = 4 x mini: four optimizer steps per batch, as in the seed.
STEPS_PER_BATCH = SEED_TRAIN_BATCH // SEED_MINI_BATCH
# Below 8 sequences per forward/backward a GPU mostly waits on kernel launches
# and the step count per mini batch explodes (a 1.5B model at <=1.5k tokens
# per sequence fills an L40S/H100 far better); nudge the mini batch instead.
MIN_MICRO_BATCH = 8
# The mini batch stays within a factor 2 of the seed's: further away the seed's
# learning rate no longer fits, so such a shape is refused, not silently retuned.
MINI_BATCH_RANGE = (SEED_MINI_BATCH // 2, SEED_MINI_BATCH * 2)

BATCH_KEYS = {
    "train": "trainer.train_batch_size",
    "mini": "trainer.policy_mini_batch_size",
    "micro_train": "trainer.micro_train_batch_size_per_gpu",
    "micro_forward": "trainer.micro_forward_batch_size_per_gpu",
    "samples": "generator.n_samples_per_prompt",
}
SOURCE = "SkyRL utils.py validate_batch_sizes"

# Checkpoints: keep the last two (the newest may be half-written when a job dies while saving).
CKPTS_KEY = "trainer.max_ckpts_to_keep"
DEFAULT_CKPTS_TO_KEEP = 2
# One checkpoint of Qwen2.5-1.5B under fsdp2: 1.54e9 params x (4 B fp32 weights
# + 8 B Adam moments) = 18.5 GB (the issue measured ~18 GB), rounded up. Sized
# as if one node held it all (true for 1 node; an upper bound for more).
CKPT_GB = 19
# Model download (Qwen2.5-1.5B-Instruct, 3.1 GB in the HF cache) + GSM8K parquet (< 10 MB), rounded up.
DATA_GB = 5
# Logs, Ray object spilling, /tmp, vLLM/torch compile caches.
HEADROOM_GB = 20
# GSM8K's train split, for the number of checkpoints a keep-all (-1) schedule writes.
GSM8K_TRAIN_ROWS = 7473


@dataclass(frozen=True)
class BatchPlan:
    dp: int
    train: int
    mini: int
    micro_train: int
    micro_forward: int
    samples: int
    changes: tuple[str, ...] = ()  # what differs from the seed and why, one line each
    derived: bool = True  # False: no plan fits this shape; the batch sizes come from --set

    @property
    def mini_per_gpu(self) -> int:
        return self.mini * self.samples // self.dp

    def overrides(self) -> dict[str, str]:
        return {key: str(getattr(self, field)) for field, key in BATCH_KEYS.items()}


def batch_problem(dp: int, train: int, mini: int, micro_train: int, micro_forward: int, samples: int) -> str | None:
    """The first rule a plan breaks, in words (None when SkyRL will accept it and no sample is dropped)."""
    if min(train, mini, micro_train, micro_forward, samples) < 1:
        return "batch sizes and n_samples_per_prompt must be 1 or more"
    if train % mini:
        return f"train_batch_size {train} is not a multiple of policy_mini_batch_size {mini}"
    if train < dp:
        return f"train_batch_size {train} is smaller than the {dp} data-parallel GPUs"
    if mini * samples % dp:
        return f"{mini} x {samples} samples per mini batch do not split evenly over {dp} GPUs"
    per_gpu = mini * samples // dp
    if per_gpu % micro_train:
        return (f"the per-GPU mini batch ({mini} x {samples} / {dp} GPUs = {per_gpu}) is not a multiple "
                f"of micro_train_batch_size_per_gpu {micro_train}")
    return None


def _micro_for(mini: int, samples: int, dp: int) -> int | None:
    """The largest micro batch <= the seed's that divides the per-GPU mini batch, if not below the floor."""
    if mini * samples % dp:
        return None
    per_gpu = mini * samples // dp
    best = max(d for d in range(1, min(per_gpu, SEED_MICRO_BATCH) + 1) if per_gpu % d == 0)
    return best if best >= MIN_MICRO_BATCH else None


def plan_batches(nodes: int, gpus_per_node: int) -> BatchPlan:
    """Batch sizes for dp = nodes x GPUs: the seed's where SkyRL accepts them, else the nearest valid ones.

    Order of preference: (1) keep train/mini, lower the micro batch (a memory
    knob, not a learning hyperparameter) to the largest divisor of the per-GPU
    mini batch; (2) move the mini batch as little as possible (ties: the larger)
    with train = 4 x mini; (3) refuse the shape in one line.
    """
    dp = nodes * max(gpus_per_node, 1)
    samples = SEED_SAMPLES_PER_PROMPT
    micro = _micro_for(SEED_MINI_BATCH, samples, dp)
    if micro is not None:
        changes = ()
        if micro != SEED_MICRO_BATCH:
            changes = (
                f"micro_train_batch_size_per_gpu {SEED_MICRO_BATCH} -> {micro}: the per-GPU mini batch "
                f"({SEED_MINI_BATCH} x {samples} / {dp} GPUs = {SEED_MINI_BATCH * samples // dp}) must be a "
                f"multiple of it ({SOURCE}); a smaller micro batch only changes memory use, not the learning",
            )
        return BatchPlan(dp, SEED_TRAIN_BATCH, SEED_MINI_BATCH, micro, SEED_MICRO_BATCH, samples, changes)
    low, high = MINI_BATCH_RANGE
    for mini in sorted(range(low, high + 1), key=lambda m: (abs(m - SEED_MINI_BATCH), -m)):
        micro = _micro_for(mini, samples, dp)
        if micro is None:
            continue
        train = STEPS_PER_BATCH * mini
        why = (f"{SEED_MINI_BATCH} x {samples} samples do not split evenly over {dp} GPUs"
               if SEED_MINI_BATCH * samples % dp else
               f"the per-GPU mini batch ({SEED_MINI_BATCH * samples // dp}) has no micro batch between "
               f"{MIN_MICRO_BATCH} and {SEED_MICRO_BATCH} dividing it")
        changes = (
            f"policy_mini_batch_size {SEED_MINI_BATCH} -> {mini} and train_batch_size {SEED_TRAIN_BATCH} -> {train} "
            f"({STEPS_PER_BATCH} optimizer steps per batch kept): {why} ({SOURCE})",
        )
        if micro != SEED_MICRO_BATCH:
            changes += (f"micro_train_batch_size_per_gpu {SEED_MICRO_BATCH} -> {micro}: the largest divisor of "
                        f"the per-GPU mini batch {mini * samples // dp} up to {SEED_MICRO_BATCH}",)
        return BatchPlan(dp, train, mini, micro, SEED_MICRO_BATCH, samples, changes)
    raise StackError(
        f"no training plan for {nodes} node(s) x {gpus_per_node} GPU(s): no mini batch within {low}..{high} "
        f"splits {samples} samples per prompt evenly over {dp} GPUs with a micro batch of {MIN_MICRO_BATCH} or more",
        hint="use fewer GPUs, or set the batch sizes yourself with --set trainer.policy_mini_batch_size=... "
             "--set trainer.train_batch_size=... --set trainer.micro_train_batch_size_per_gpu=...",
    )


def check_batch_sets(plan: BatchPlan, values: dict[str, str]) -> None:
    """Refuse (one line) final batch values, after --set, that SkyRL would refuse or trim."""
    final = {}
    for field, key in BATCH_KEYS.items():
        try:
            final[field] = int(values[key])
        except ValueError:
            raise StackError(f"bad --set {key}={values[key]}", hint="batch sizes are whole numbers") from None
    problem = batch_problem(plan.dp, **final)
    if problem:
        hint = (f"leave the batch sizes to render (for {plan.dp} GPUs: train {plan.train}, mini {plan.mini}, "
                f"micro {plan.micro_train}) or pick values that divide evenly" if plan.derived else
                f"pick values that divide evenly: mini x {plan.samples} samples a multiple of {plan.dp}, "
                f"and the per-GPU mini batch a multiple of the micro batch")
        raise StackError(f"SkyRL would refuse this training plan on {plan.dp} GPUs: {problem}", hint=hint)


def parse_ckpts_to_keep(value: str) -> int:
    """SkyRL's trainer.max_ckpts_to_keep: N > 0 keeps the last N, -1 (any negative) keeps all; 0 is refused."""
    try:
        keep = int(value)
    except ValueError:
        keep = 0
    if keep == 0:
        # validate_cfg raises on 0 (utils.py); say so at render, not after the cluster is up.
        raise StackError(f"bad --set {CKPTS_KEY}={value}",
                         hint="keep the last N checkpoints with N >= 1, or all of them with -1 (sizes the disk for all)")
    return keep


def checkpoints_written(train_batch: int, epochs: int, ckpt_interval: int) -> int:
    """How many checkpoints a full GSM8K run saves: every ckpt_interval steps plus the final one (trainer.py)."""
    if ckpt_interval <= 0:
        return 0
    steps = GSM8K_TRAIN_ROWS // train_batch * epochs
    return steps // ckpt_interval + (1 if steps % ckpt_interval else 0)


@dataclass(frozen=True)
class DiskNeed:
    image_gb: int
    data_gb: int  # DATA_GB for training, 0 without
    checkpoints: int  # how many checkpoints the disk must hold at once
    ckpt_gb: int = CKPT_GB  # one checkpoint of the trained model (model_sizes.py)
    unsized_model: str | None = None  # a model model_sizes.py cannot size: --disk-size decides
    note: str = ""  # what the size means where it is not a boot disk (Kubernetes), for the breakdown

    @property
    def gb(self) -> int:
        return self.image_gb + self.data_gb + self.checkpoints * self.ckpt_gb + HEADROOM_GB

    def breakdown(self) -> str:
        parts = [f"image {self.image_gb}"] if self.image_gb else []
        if self.data_gb:
            parts.append(f"model and data {self.data_gb}")
        if self.checkpoints:
            parts.append(f"{self.checkpoints} checkpoints x {self.ckpt_gb}")
        if self.unsized_model:
            parts.append(f"model {self.unsized_model} and its checkpoints (not sized: --disk-size decides)")
        note = f" ({self.note})" if self.note else ""
        return f"{self.gb} GB = " + " + ".join(parts + [f"headroom {HEADROOM_GB}"]) + note
