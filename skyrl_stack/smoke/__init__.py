"""The smoke suite that ships inside the image (python -m skyrl_stack.smoke).

Tiers, in order: environment, cuda, gpu, ray, engine, skyrl (see suite.TIERS).
Standard library only at import time: torch, ray, vLLM, Hydra... are imported
inside the checks that need them, so the suite runs in every variant (the
rehearsal image has only Ray) and on a bare GPU host with only torch.
"""
