"""deblurcli.ray and ``deblur cluster`` on a local Ray (``ray.init(num_cpus=2)``); skipped without Ray.

The point of the Ray runner is that it writes what the CLI writes: the test deblurs the same folder both
ways and compares the files byte for byte, compare strips and metadata included, and checks that a bad
file is one failed row of the result table rather than the end of the job.
"""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import numpy as np
import piexif
import pytest
from click.testing import CliRunner
from PIL import Image
from test_cli_deblur import photo, tiny_nafnet

from deblurcli import weights
from deblurcli.cli import group
from deblurcli.cli.cluster import command as cluster_command
from deblurcli.errors import DeblurError
from deblurcli.ray import RAY_MISSING, import_ray


@pytest.fixture(scope="module")
def ray_session():  # type: ignore[no-untyped-def]
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    weights.save_generator(tiny_nafnet(), path, {"name": "tiny"})
    return path


def deblur(*args: str | Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(group, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def cluster(*args: str | Path) -> tuple[int, str, str]:
    """``deblur cluster ARGS`` (invoked on the command itself, so the test does not depend on its
    registration in the group)."""
    result = CliRunner().invoke(cluster_command, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_missing_ray_is_one_actionable_line(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_ray(name: str, *args: object, **kwargs: object) -> object:
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(DeblurError) as info:
        import_ray()
    assert str(info.value) == RAY_MISSING and "pip install 'deblurcli[ray]'" in RAY_MISSING
    code, _, stderr = cluster("in", "out")
    assert code == 2 and stderr.strip() == f"error: {RAY_MISSING}"


def test_cluster_writes_the_same_bytes_as_the_cli(ray_session: object, tmp_path: Path, model_file: Path) -> None:
    src = tmp_path / "in"
    photo(src / "a.png", seed=1)
    photo(src / "sub" / "b.png", seed=2)
    rgb = np.random.default_rng(3).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    exif = piexif.dump({"0th": {piexif.ImageIFD.Make: b"Cam", piexif.ImageIFD.Orientation: 6}})
    Image.fromarray(rgb).save(src / "c.jpg", quality=90, exif=exif)
    (src / "broken.jpg").write_bytes(b"not a JPEG")

    code, _, _ = deblur(src, "-r", "-o", tmp_path / "cli", "--weights", model_file, "--compare")
    assert code == 1  # the broken file
    code, stdout, stderr = cluster(
        src, tmp_path / "ray", "-r", "--weights", model_file, "--compare", "--json", "--cpus-per-actor", "1",
    )
    assert code == 1, stderr
    rows = [json.loads(line) for line in stdout.splitlines()]
    assert [(Path(r["input"]).relative_to(src).as_posix(), r["status"]) for r in rows] == [
        ("a.png", "done"), ("broken.jpg", "failed"), ("c.jpg", "done"), ("sub/b.png", "done"),
    ]
    assert "not a recognised image" in rows[1]["reason"] and f"error: {src / 'broken.jpg'}: " in stderr
    assert "done 3, skipped 0, failed 1" in stderr
    written = sorted(p.relative_to(tmp_path / "ray") for p in (tmp_path / "ray").rglob("*") if p.is_file())
    assert written == sorted(p.relative_to(tmp_path / "cli") for p in (tmp_path / "cli").rglob("*") if p.is_file())
    assert len(written) == 6  # 3 outputs + 3 compare strips
    for rel in written:
        assert (tmp_path / "ray" / rel).read_bytes() == (tmp_path / "cli" / rel).read_bytes(), rel

    # Re-running skips what exists (with nothing left to do, no actor is even started).
    (src / "broken.jpg").unlink()
    code, stdout, stderr = cluster(src, tmp_path / "ray", "-r", "--weights", model_file, "--json")
    assert code == 0, stderr
    assert [json.loads(line)["status"] for line in stdout.splitlines()] == ["skipped"] * 3
