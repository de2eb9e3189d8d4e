"""The image: pins -> build -> push -> promote.

- ``pins.toml`` / ``pins.py``: every version and digest, validated on load (the only place one lives).
- ``lock_check.py``, ``rehearsal_lock.py``, ``layers.py``: the pins as build inputs (checked against
  SkyRL's lock, the generated rehearsal lock, the layer groups ``docker/scripts/install-layer`` installs).
- ``bake.py``: the build definition (a ``docker buildx bake`` file) derived from the pins.
- ``build.py``: ``invoke build`` (buildx, build records).  ``push.py``: ``invoke push``.
  ``promote.py``: ``invoke promote``.  ``records.py``: build and push records.
- ``refs.py``: image references by the distribution grammar.  ``manifest.py``: the in-image manifest.

Standard library only at import time for the modules the image itself carries
(pins, manifest, lock_check, refs): see the stack stage of docker/Dockerfile.
"""
