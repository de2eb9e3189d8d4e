"""How much disk the model a task trains needs: its download and one checkpoint, from its parameter count.

The disk is sized before launch (options.sized_disk); a model it cannot size is
refused unless --disk-size says how much to give, because a checkpoint that
does not fit fails after hours of billed training. Sizes follow from the
parameter count alone:
- one SkyRL fsdp2 checkpoint holds fp32 weights (4 B) and Adam's two moments
  (8 B) per parameter: 12 B x params (Qwen2.5-7B: 91 GB), as training_plan.CKPT_GB
  says for the seed;
- the download is the bf16 safetensors (2 B per parameter) in the Hugging Face
  cache, plus 1 GB for GSM8K's parquet files, the tokenizer and cache slack.
Both rounded up to whole GB. tests/launch/test_model_sizes.py holds the seed's
figures to training_plan's (CKPT_GB 19, DATA_GB 5).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

# Parameters (billions) as each model card on huggingface.co states them ("Number of Parameters");
# a base model has its instruct model's count.
QWEN25_PARAMS_B = {"0.5B": 0.49, "1.5B": 1.54, "3B": 3.09, "7B": 7.61, "14B": 14.7, "32B": 32.5, "72B": 72.7}
MODEL_PARAMS_B = {
    f"Qwen/Qwen2.5-{size}{suffix}": params
    for size, params in QWEN25_PARAMS_B.items() for suffix in ("", "-Instruct")
}
CKPT_BYTES_PER_PARAM = 12  # fp32 weights + Adam's exp_avg and exp_avg_sq
DOWNLOAD_BYTES_PER_PARAM = 2  # bf16 safetensors
DATA_AND_CACHE_GB = 1


@dataclass(frozen=True)
class ModelSize:
    params_b: float
    ckpt_gb: int  # one checkpoint
    download_gb: int  # the model in the HF cache, the data and the tokenizer


def model_size(path: str) -> ModelSize | None:
    """The disk a known model needs; None for one not in MODEL_PARAMS_B (a local path, another model)."""
    params = MODEL_PARAMS_B.get(path.strip().strip("'\""))
    if params is None:
        return None
    return ModelSize(params, math.ceil(params * CKPT_BYTES_PER_PARAM),
                     math.ceil(params * DOWNLOAD_BYTES_PER_PARAM) + DATA_AND_CACHE_GB)
