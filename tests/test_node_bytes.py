"""Bytes per node (skyrl_stack/dev/node_bytes.py, wheel_sizes.py): wheel sizes read by real HTTP range
requests from a real zip, the accounting on SkyRL's real lock, and the README block that must agree with it."""
from __future__ import annotations

import copy
import http.server
import io
import json
import re
import threading
import tomllib
import zipfile

import pytest

from skyrl_stack.dev import bench, node_bytes, wheel_sizes
from skyrl_stack.errors import StackError

from tests.support.paths import DATA, REPO_ROOT


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves one file with `Range: bytes=-N` and `bytes=A-B`, as PyPI's file host does."""

    body = b""

    def do_GET(self):  # noqa: N802 - http.server's name
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        start, end = match.groups()
        if not start:
            start, end = max(0, len(self.body) - int(end)), len(self.body) - 1  # clamped, as RFC 9110 says
        start, end = int(start), min(int(end or len(self.body) - 1), len(self.body) - 1)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{end}/{len(self.body)}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        self.wfile.write(self.body[start:end + 1])

    def log_message(self, *args):
        pass


@pytest.fixture
def served_wheel():
    """A wheel-like zip (deflated members, one empty) behind a real HTTP server on loopback."""
    data = io.BytesIO()
    members = {"pkg/__init__.py": b"x = 1\n" * 5000, "pkg/data.bin": bytes(range(256)) * 400, "pkg/empty": b""}
    with zipfile.ZipFile(data, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    RangeHandler.body = data.getvalue()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/pkg-1.0-py3-none-any.whl", members, len(data.getvalue())
    finally:
        server.shutdown()
        server.server_close()


def test_unpacked_size_comes_from_the_zip_directory_by_range_requests(served_wheel):
    url, members, size = served_wheel
    measured = wheel_sizes.measure(url)
    assert measured == {"bytes": size, "unpacked": sum(len(c) for c in members.values()), "files": 3}
    assert measured["bytes"] < measured["unpacked"]  # deflated: the download is smaller than what is written


def test_a_directory_that_is_not_one_is_refused():
    with pytest.raises(ValueError, match=r"not a central directory entry at byte 0"):
        wheel_sizes.central_directory_sizes(b"PK\x03\x04" + b"\0" * 60)


@pytest.fixture(scope="module")
def accounted():
    return node_bytes.accounting()


@pytest.mark.parametrize("variant", node_bytes.GPU_VARIANTS)
def test_the_image_counts_its_base_and_every_row_names_a_source(accounted, variant):
    block = accounted[variant]
    published = tomllib.loads(node_bytes._paths()["published"].read_text())["base"]
    (base,) = [row for row in block["image"] if row["what"].startswith("base ")]
    assert base["unpacked"] == published["unpacked"] and base["estimate"]
    assert all(row["source"] for row in block["image"] + block["setup"])
    for side in ("image", "setup"):
        assert block["totals"][side]["compressed"] == sum(row["compressed"] for row in block[side])
    # The setup step pulls no base: the image's extra bytes are at least the base's.
    extra = block["totals"]["image"]["compressed"] - block["totals"]["setup"]["compressed"]
    assert extra >= base["compressed"]


def test_setup_side_wheel_bytes_are_the_locks_own_sizes(accounted):
    """Where the lock records a size, the setup rows carry exactly the lock's bytes (the 3.93 GB the layer table sums)."""
    from tests.image.test_layers import export  # the lock, exported by uv as the layer tests do
    import gzip
    import shutil
    import tempfile
    from pathlib import Path

    from skyrl_stack.image import layers

    with tempfile.TemporaryDirectory() as project:
        shutil.copy(DATA / "skyrl-1ed499c" / "pyproject.toml", Path(project) / "pyproject.toml")
        lock = gzip.decompress((DATA / "skyrl-1ed499c" / "uv.lock.gz").read_bytes()).decode()
        (Path(project) / "uv.lock").write_text(lock)
        (Path(project) / "skyrl-gym").mkdir()
        table = layers.expected_gpu_layers(export(Path(project), "vllm"), lock)
    rows = {row["what"].split(":")[0]: row for row in accounted["vllm"]["setup"]}
    assert rows["cudnn-cublas"]["compressed"] == table["cudnn-cublas"]["bytes"]
    assert rows["rest"]["compressed"] == table["rest"]["bytes"]


def test_a_measured_wheel_that_disagrees_with_the_lock_is_refused():
    paths = node_bytes._paths()
    measured = json.loads(paths["wheels"].read_text())
    lock_text, exports = node_bytes._exports(paths["lock"])
    cublas = next(url for url in measured["wheels"] if "nvidia_cublas_cu12-12.8.3.14" in url)
    wrong = copy.deepcopy(measured)
    wrong["wheels"][cublas]["bytes"] += 1
    with pytest.raises(ValueError, match=r"nvidia-cublas-cu12: the lock says 609620630 bytes, the measured wheel 609620631"):
        node_bytes.variant_rows("vllm", lock_text, exports["vllm"], wrong,
                                tomllib.loads(paths["published"].read_text()), json.loads(paths["rehearsal"].read_text()))


def test_a_published_size_of_another_base_is_refused(tmp_path):
    with pytest.raises(StackError, match=r"gives the size of nvidia/cuda:12.4.1-devel-ubuntu22.04, but pins.toml \[base\]"):
        node_bytes.check_base("nvidia/cuda:12.4.1-devel-ubuntu22.04", tmp_path / "published_sizes.toml")


def test_readme_block_is_the_accounting(accounted):
    """Every README figure about a node's bytes comes from this table: the block between the markers is it."""
    readme = (REPO_ROOT / "README.md").read_text()
    block = readme.split(bench.COLDSTART_BEGIN, 1)[1].split(bench.COLDSTART_END, 1)[0]
    assert node_bytes.markdown(accounted) in block
    ratio = accounted["vllm"]["totals"]["image"]["compressed"] / accounted["vllm"]["totals"]["setup"]["compressed"]
    assert f"about {ratio:.1f}x the bytes" in readme
    assert "moves about the same bytes" not in readme


def test_the_figures_render_states_are_the_accounting(accounted):
    """skyrl_stack/launch/image_bytes.json (what render and launch print) is what `invoke bench --part bytes` computes."""
    from skyrl_stack.launch.cold_start import image_bytes

    assert image_bytes() == node_bytes.launch_figures(accounted)


def test_readme_disk_tier_figures_are_the_plans():
    """The README's disk tier paragraph quotes the vllm plan's own figures (cold_start.PullPlan)."""
    from skyrl_stack.launch.cold_start import pull_plan

    plan = pull_plan("vllm", "aws")
    readme = " ".join((REPO_ROOT / "README.md").read_text().split())
    assert (f"the vllm image's {plan.unpacked / 1e9:.2f} GB take {plan.write_s('medium'):.0f} s to write at `medium` "
            f"against a {plan.download_s:.0f} s download") in readme
    assert f"at `high` they take {plan.write_s('high'):.0f} s" in readme
    assert f"unpack to about {plan.unpacked / plan.compressed:.1f}x their compressed bytes" in readme


def test_the_recovery_cost_table_quotes_the_byte_tables_pull():
    """README's "what a recovery costs" row for the image pull quotes the per-node bytes the byte table (and
    render's plan, image_bytes.json) gives, base included, not a partial figure that contradicts it."""
    from skyrl_stack.launch.cold_start import PULL_MB_S, image_bytes
    from tests.support.paths import REPO_ROOT

    vllm = image_bytes()["vllm"]
    (row,) = [line for line in (REPO_ROOT / "README.md").read_text().splitlines() if line.startswith("| image pull |")]
    assert f"fetches {vllm['compressed'] / 1e9:.2f} GB compressed and writes {vllm['unpacked'] / 1e9:.2f} GB" in row
    assert f"{vllm['compressed'] / 1e6 / PULL_MB_S:.0f} s at 1 Gbit/s" in row and PULL_MB_S == 125
