"""The smoke suite that ships inside the image (python -m skyrl_stack.smoke).

Tiers, in order: environment, cuda, gpu, ray, engine, skyrl (see suite.TIERS).
Standard library only at import time: torch, ray, vLLM, Hydra... are imported
inside the checks that need them, so the suite runs in every variant (the
rehearsal image has only Ray) and on a bare GPU host with only torch.

Beside the suite, on the host only (not copied into the image, see the stack
stage of docker/Dockerfile): ``runner.py`` (``invoke smoke``: runs the suite in
a container of the image, or on this host) and ``gate.py`` (the smoke record
that decides what ``invoke push`` may tag).
"""
