"""A driver shaped like SkyRL's entry point, run with the real Ray 2.48 and Hydra 1.3 of .venv-skyrl.

SkyRL's `main_base.main` is `@hydra.main` and does `ray.get(skyrl_entrypoint.remote(cfg))`;
the trainer in that task calls actors (policy, ref, inference engines) on any node
(SkyRL 1ed499c skyrl_train/entrypoints/main_base.py). The real one needs GPUs and vLLM, so
this keeps that shape with one actor, which fails as named by FAILURE:

- abort: os.abort(), what torch's NCCL watchdog does to a worker on a timed-out collective
  (SIGABRT through std::terminate);
- kill: SIGKILL, the OOM killer;
- node: the actor's node loses its raylet (ray.cluster_utils: SIGKILL), as a lost worker VM;
- raise: a Python exception in the actor, a bug.

`RAY_TMPDIR=DIR python tests/support/driver_exit.py FAILURE hydra.run.dir=DIR`: its exit code is the point.
"""
import os
import signal
import sys
import threading
import time

import hydra
import ray
from omegaconf import DictConfig

FAILURE = sys.argv.pop(1)
# Run with RAY_TMPDIR set to a directory of its own: Ray's sessions and the address file that
# ray.cluster_utils writes for `ray.init()` to find (ray_current_cluster) land there, never in
# /tmp/ray where another process's `ray.init()` would find a dead cluster.


@ray.remote(num_cpus=0)
class Policy:
    def train_step(self, failure):
        if failure == "abort":
            os.abort()
        if failure == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if failure == "raise":
            raise RuntimeError("a bug in the training code")
        time.sleep(120)  # "node": killed from outside while it works


@ray.remote(num_cpus=0)
def entrypoint(failure):
    policy = Policy.options(resources={"worker": 1} if failure == "node" else {}).remote()
    return ray.get(policy.train_step.remote(failure))


@hydra.main(config_path=None, config_name=None, version_base=None)
def main(cfg: DictConfig) -> None:
    if FAILURE == "node":
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        try:
            ray.init(address=cluster.address)  # the driver on the head, as skyrl-train runs there
            worker = cluster.add_node(num_cpus=1, resources={"worker": 1})
            cluster.wait_for_nodes()
            threading.Timer(5, cluster.remove_node, (worker,), {"allow_graceful": False}).start()
            ray.get(entrypoint.remote(FAILURE))
        finally:
            ray.shutdown()
            cluster.shutdown()  # its processes, and the address file
    else:
        ray.init(address="local", num_cpus=1, include_dashboard=False)  # a cluster of its own, ended at exit
        ray.get(entrypoint.remote(FAILURE))


if __name__ == "__main__":
    main()
