"""What the package looks like from the outside: the modules the image carries."""
import re

from tests.support.paths import REPO_ROOT


def image_modules() -> list[str]:
    """The skyrl_stack files the stack stage of docker/Dockerfile copies into the image, as it names them."""
    text = (REPO_ROOT / "docker" / "Dockerfile").read_text()
    match = re.search(r"for f in (.*?); do \\\n\s*install -D -m 0644 \"/tmp/src/skyrl_stack/\$f\"", text, re.S)
    assert match, "the stack stage's copy of the in-image modules was not found in docker/Dockerfile"
    return [f"skyrl_stack/{name}" for name in match.group(1).replace("\\\n", " ").split()]
