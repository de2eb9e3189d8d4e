"""Developer tooling behind ``invoke lint`` and ``invoke bench`` (not used by the image or a launch)."""
