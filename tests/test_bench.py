"""skyrl_stack/dev/bench.py: wasted bytes from real layer tars (OCI whiteouts), the table, the README section."""
from __future__ import annotations

import io
import tarfile

import pytest

from skyrl_stack.dev import bench
from skyrl_stack.errors import StackError


def layer(*entries) -> tarfile.TarFile:
    """A layer tar with (path, bytes) files, or (path, None) directories, as an image layer holds them."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        for path, size in entries:
            info = tarfile.TarInfo(path)
            if size is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = size
                tar.addfile(info, io.BytesIO(b"x" * size))
    data.seek(0)
    return tarfile.open(fileobj=data)


def test_overwritten_and_whiteout_files_are_wasted():
    waste = bench.wasted_bytes([
        layer(("etc", None), ("etc/a", 100), ("var/lib/apt/lists/p", 1000), ("var/lib/apt/lists/q", 10), ("keep", 7)),
        layer(("etc/a", 40), ("var/lib/apt/lists/.wh..wh..opq", 0), ("var/lib/apt/lists/new", 5)),
        layer(("etc/.wh.a", 0), ("etc", None)),
    ])
    # etc/a: 100 overwritten, then its 40 deleted; the lists' 1010 hidden by the opaque whiteout.
    assert waste["wasted_bytes"] == 100 + 40 + 1010
    assert waste["layer_bytes"] == 100 + 1000 + 10 + 7 + 40 + 5
    assert waste["wasted_per_layer"] == [1110, 40, 0]


def test_a_deleted_directory_wastes_everything_under_it():
    waste = bench.wasted_bytes([layer(("opt/x/a", 3), ("opt/x/b/c", 4), ("opt/xy", 5)), layer(("opt/.wh.x", 0))])
    assert waste["wasted_bytes"] == 7  # opt/xy is not under opt/x


def test_nothing_removed_nothing_wasted():
    assert bench.wasted_bytes([layer(("a", 1)), layer(("b", 2))])["wasted_bytes"] == 0


def test_readme_table_is_replaced_between_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n## Performance\n{bench.README_BEGIN}\nold\n{bench.README_END}\nafter\n")
    results = {"machine": "2 x CPU", "start": {"skypilot_start_image_s": 4.0, "skypilot_start_plain_s": 16.0,
                                               "skypilot_start_ratio": 0.25}}
    bench.replace_readme_table(readme, bench.markdown(results))
    text = readme.read_text()
    assert "old" not in text and text.endswith(f"{bench.README_END}\nafter\n")
    assert "| SkyPilot's DockerInitializer: image vs plain Debian + Ray | 4.0 s vs 16.0 s = 0.25 |" in text
    assert "on 2 x CPU (rehearsal image)" in text


def test_image_rows_give_the_20_gb_cost_and_both_compressions():
    image = {"cold_build_s": 120.0, "top_layer_rebuild_s": 6.0, "noop_rebuild_s": 0.2, "push_incremental_bytes": 4200,
             "push_incremental_pct": 0.001, "cold_build_s_per_gb": 300.0, "image_compressed_bytes": 400_000_000,
             "image_compressed_bytes_gzip": 450_000_000, "pull_s_zstd": 3.1, "pull_s_gzip": 7.4}
    table = bench.markdown({"machine": "2 x CPU", "image": image})
    assert "| rebuild after a top-layer change | 6.0 s (5% of cold) |" in table
    assert "| cold build per GB of compressed image (a 20 GB image) | 300.0 s/GB (100.0 min) |" in table
    assert "| image compressed, zstd vs gzip | 400.0 MB vs 450.0 MB |" in table
    assert "| pull (download + unpack) into an empty engine, zstd vs gzip | 3.1 s vs 7.4 s |" in table


def test_readme_without_markers_is_one_error(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n")
    with pytest.raises(StackError, match=r"has no performance table markers"):
        bench.replace_readme_table(readme, "| a | b |\n")
    assert readme.read_text() == "# x\n"


def test_unknown_part_is_refused_before_anything_runs():
    with pytest.raises(StackError, match=r"unknown benchmark speed"):
        bench.run(["speed"])
