"""Engine tier: the variant's inference engine (vLLM or SGLang) generates from a tiny local model.

The model (a 2-layer Llama with random weights) and its tokenizer (a word-level
tokenizer built from a few sentences) are made on the spot, so nothing is
downloaded. Generation runs in a child process (`python -m
skyrl_stack.smoke.inference`), which frees the GPU when it exits and lets a
hang be timed out.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

from skyrl_stack.smoke.suite import Check, Fail, Skip, last_line

BACKENDS = ("vllm", "sglang")
NEW_TOKENS = 8
VOCAB_SIZE = 64
TIMEOUT_S = 900
CORPUS = "the quick brown fox jumps over the lazy dog while a small model learns to count one two three four five six seven eight nine ten"
PROMPT = "the quick brown fox"
RESULT_MARK = "SMOKE-ENGINE-RESULT "


def make_tiny_model(directory: str) -> str:
    """Write a random-weight Llama and a matching word-level tokenizer to `directory`."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]
    words = specials + sorted(set(CORPUS.split()))
    # Exactly VOCAB_SIZE tokens: every id a random model can sample must decode.
    words += [f"w{i}" for i in range(VOCAB_SIZE - len(words))]
    vocab = {token: i for i, token in enumerate(words)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    tokenizer.save_pretrained(directory)

    torch.manual_seed(0)
    # head_dim 64: a size every attention backend of vLLM/SGLang supports.
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
        bos_token_id=1, eos_token_id=2, torch_dtype="bfloat16",
    )
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(directory)
    return directory


def generate_vllm(model_dir: str) -> int:
    """Number of tokens vLLM generated for the prompt."""
    from vllm import LLM, SamplingParams

    llm = LLM(model=model_dir, tokenizer=model_dir, dtype="bfloat16", max_model_len=128,
              gpu_memory_utilization=0.3, enforce_eager=True, seed=0)
    params = SamplingParams(max_tokens=NEW_TOKENS, temperature=0.0, ignore_eos=True)
    (output,) = llm.generate([PROMPT], params)
    return len(output.outputs[0].token_ids)


def generate_sglang(model_dir: str) -> int:
    """Number of tokens SGLang generated for the prompt."""
    import sglang

    engine = sglang.Engine(model_path=model_dir, tokenizer_path=model_dir, dtype="bfloat16",
                           context_length=128, mem_fraction_static=0.3, disable_cuda_graph=True, random_seed=0)
    try:
        output = engine.generate(PROMPT, {"max_new_tokens": NEW_TOKENS, "temperature": 0.0, "ignore_eos": True})
    finally:
        engine.shutdown()
    return int(output["meta_info"]["completion_tokens"])


def backend_of(ctx) -> str:
    if ctx.variant is not None:
        if ctx.variant.skyrl_extra not in BACKENDS:  # the extra is named after the engine
            raise Skip("not in this variant")
        return ctx.variant.skyrl_extra
    import importlib.util

    for backend in BACKENDS:
        if importlib.util.find_spec(backend) is not None:
            return backend
    raise Skip("no inference engine installed (variant unknown)")


def check_generate(ctx) -> str:
    backend = backend_of(ctx)
    ctx.require_gpu()
    with tempfile.TemporaryDirectory(prefix="smoke-engine-") as workdir:
        try:
            out = subprocess.run(
                [sys.executable, "-m", "skyrl_stack.smoke.inference", "--backend", backend, "--workdir", workdir],
                capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
            )
        except subprocess.TimeoutExpired:
            raise Fail(f"{backend} generation did not finish within {TIMEOUT_S}s") from None
    marked = [line for line in out.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if out.returncode != 0 or not marked:
        raise Fail(f"{backend} generation failed (exit {out.returncode}): {last_line(out.stderr or out.stdout)}")
    tokens = json.loads(marked[-1][len(RESULT_MARK):])["tokens"]
    if tokens != NEW_TOKENS:
        raise Fail(f"{backend} returned {tokens} tokens, asked for {NEW_TOKENS}")
    return f"{backend}: {tokens} tokens from a random-weight tiny Llama"


CHECKS = [Check("engine.generate", check_generate)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m skyrl_stack.smoke.inference")
    parser.add_argument("--backend", choices=BACKENDS, required=True)
    parser.add_argument("--workdir", required=True)
    args = parser.parse_args(argv)
    model_dir = make_tiny_model(os.path.join(args.workdir, "tiny-llama"))
    tokens = generate_vllm(model_dir) if args.backend == "vllm" else generate_sglang(model_dir)
    print(RESULT_MARK + json.dumps({"tokens": tokens}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
