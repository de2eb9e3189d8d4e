"""Paths the tests share: the checkout, and the data and goldens kept under tests/."""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
TESTS = REPO_ROOT / "tests"
DATA = TESTS / "data"
GOLDEN = TESTS / "golden"
