"""skyrl-stack: a pinned SkyRL image, its smoke suite, and a one-command SkyPilot launch.

Keep this file free of imports: it is imported inside the image by the smoke
suite and by `invoke --list`, both of which must stay fast.
"""
__version__ = "0.1.0"
