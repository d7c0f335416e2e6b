"""The kernel path behind the Session and the CLI: the sharp-photo gate, auto's choice, known kernels.

Small synthetic photos (shapes with edges of every angle, as in test_kernel_estimate.py) and a stand-in
network that records its calls, so each test checks which path ran and what it did to the pixels.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import scenes
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

from deblurcli import weights
from deblurcli.blur import apply_kernels
from deblurcli.cli import group
from deblurcli.metrics import shift_tolerant_psnr
from deblurcli.session import Session, max_kernel_size

pytestmark = pytest.mark.usefixtures("one_thread")  # kernel estimation is many small FFTs


class Recorder(nn.Module):
    """A network stand-in that leaves pixels alone and counts the photos it was given."""

    size_multiple = 1
    tile_margin = 0
    config: ClassVar[dict] = {}

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x


def shapes(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Overlapping rectangles and discs of random grey levels, as an RGB float32 photo."""
    return np.repeat(scenes.shapes(h, w, seed=seed)[..., None], 3, axis=2)


def blur(rgb: np.ndarray, kernel: np.ndarray, noise: float = 0.005, seed: int = 1) -> np.ndarray:
    grey = torch.from_numpy(np.ascontiguousarray(rgb[..., 0]))[None, None]
    out = apply_kernels(grey, torch.from_numpy(kernel)[None, None])[0, 0]
    out = out + noise * torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    return np.repeat(out.clamp(0, 1).numpy()[..., None], 3, axis=2)


def bent_path() -> np.ndarray:
    """A 7 px L-shaped camera-shake path with uneven weights."""
    k = np.zeros((9, 9), np.float32)
    k[2, 1:7] = [0.05, 0.08, 0.1, 0.12, 0.12, 0.1]
    k[3:7, 6] = [0.1, 0.1, 0.08, 0.05]
    return k / k.sum()


def line(length: int, vertical: bool = False) -> np.ndarray:
    k = np.zeros((length, length), np.float32)
    k[length // 2] = 1.0 / length
    return np.ascontiguousarray(k.T) if vertical else k


def test_the_gate_returns_a_sharp_photo_bit_identical() -> None:
    """Auto lets the network look at a photo the gate calls sharp; a network that changes nothing there
    leaves the photo unchanged, bit for bit."""
    network = Recorder()
    sharp = shapes(128, 128, seed=2)
    session = Session("auto", module=network, device="cpu", precision="fp32")
    network.calls = 0  # the tile planner's probe
    result = session.deblur(sharp)
    assert result.method == "unchanged" and np.array_equal(result.rgb, sharp)
    assert network.calls == 1 and result.kernel is not None and "sharp" in " ".join(result.notes)


class Redraws(Recorder):
    """A network stand-in that redraws one corner of the photo (as the real one redraws a moving subject)."""

    def __init__(self, side: int) -> None:
        super().__init__()
        self.side = side

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        out = x.clone()
        out[..., : self.side, : self.side] = self.redraw(out[..., : self.side, : self.side])
        return out

    def redraw(self, corner: torch.Tensor) -> torch.Tensor:
        return 1.0 - corner


@pytest.mark.parametrize(("side", "expected"), [(40, "network"), (8, "unchanged")])
def test_auto_keeps_the_networks_output_where_it_redraws_part_of_a_sharp_looking_photo(side: int, expected: str) -> None:
    """The gate saw a sharp background; the network redrawing a 40 px corner of a 128 px photo (a subject
    blurred by its own motion) is enough for auto to keep its output, an 8 px one (no whole block) is not."""
    network = Redraws(side)
    sharp = shapes(128, 128, seed=2)
    result = Session("auto", module=network, device="cpu", precision="fp32").deblur(sharp)
    assert result.method == expected
    notes = " ".join(result.notes)
    if expected == "network":
        assert not np.array_equal(result.rgb, sharp) and np.allclose(result.rgb[40:, 40:], sharp[40:, 40:])
        assert "the network sharpens" in notes and "moving subject" in notes and result.point
    else:
        assert np.array_equal(result.rgb, sharp) and "left unchanged" in notes


class Brightens(Redraws):
    """Redraws a corner by brightening it by 0.3 (inverting would leave a mid-grey corner as it is)."""

    def redraw(self, corner: torch.Tensor) -> torch.Tensor:
        return corner + 0.3


def test_auto_keeps_the_networks_output_only_where_it_redraws_a_small_part_of_a_sharp_looking_photo() -> None:
    """A 24 px corner of a 512 px photo (under 1 % of its blocks) redrawn: auto keeps the network's output
    there, feathered, and returns the rest of the photo bit for bit."""
    network = Brightens(24)
    sharp = shapes(512, 512, seed=2)
    result = Session("auto", module=network, device="cpu", precision="fp32").deblur(sharp)
    assert result.method == "network" and result.point and result.patched is not None and 0 < result.patched < 0.05
    assert np.allclose(result.rgb[:8, :8], np.clip(sharp[:8, :8] + 0.3, 0, 1), atol=1e-6)
    assert np.array_equal(result.rgb[128:], sharp[128:]) and np.array_equal(result.rgb[:, 128:], sharp[:, 128:])
    assert "there only" in " ".join(result.notes)


def test_kernel_method_keeps_the_gate_without_asking_the_network() -> None:
    refiner = Redraws(64)
    sharp = shapes(128, 128, seed=2)
    session = Session("kernel", device="cpu", refiner="none")
    session.model = refiner  # even with a network at hand, --method kernel trusts the gate alone
    result = session.deblur(sharp)
    assert result.method == "unchanged" and np.array_equal(result.rgb, sharp) and refiner.calls == 0


def test_kernel_method_deconvolves_camera_shake() -> None:
    truth = shapes(128, 128)
    blurry = blur(truth, bent_path())
    result = Session("kernel", device="cpu").deblur(blurry)  # searches up to 11 px on a 128 px photo
    assert result.method == "kernel" and result.kernel is not None and result.kernel.shape[0] % 2 == 1
    before, after = shift_tolerant_psnr(blurry, truth, 5), shift_tolerant_psnr(result.rgb, truth, 5)
    assert after > before + 5.0, (before, after)


def test_the_kernel_search_is_capped_by_the_photo_size() -> None:
    assert max_kernel_size(35, (128, 200)) == 11
    assert max_kernel_size(35, (3000, 4000)) == 35
    assert max_kernel_size(35, (40, 40)) == 7
    assert max_kernel_size(20, (1000, 1000)) == 19


def test_auto_hands_spatially_varying_blur_to_the_network() -> None:
    """Left half shaken horizontally, right half vertically (a moving subject): no single kernel explains
    the photo, the two estimation windows disagree, and auto uses the network rather than a wrong kernel."""
    network = Recorder()
    scene = shapes(256, 640, seed=5)
    dynamic = scene.copy()
    dynamic[:, :320] = blur(scene, line(9))[:, :320]
    dynamic[:, 320:] = blur(scene, line(9, vertical=True))[:, 320:]
    result = Session("auto", module=network, device="cpu").deblur(dynamic)
    assert result.method == "network" and network.calls >= 1
    assert result.confidence is not None and result.confidence < 0.5


@pytest.mark.parametrize("method", ["auto", "kernel"])
def test_a_deconvolution_that_leaves_much_unexplained_goes_to_the_network_under_auto(
    method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Step 4 of decide.py: the kernel passed the estimator's checks, but its deconvolution does not re-blur
    to a fifth of the photo (a moving object elsewhere); auto uses the network, --method kernel says so."""
    seen: list[float] = []

    def unexplained(_: Session, rgb: np.ndarray, deconvolved: np.ndarray, kernel: torch.Tensor, noise: float, *, domain: str) -> float:
        seen.append(float(np.abs(deconvolved - rgb).mean()))
        return 0.2

    monkeypatch.setattr(Session, "unexplained", unexplained)
    network = Recorder()
    blurry = blur(shapes(128, 128), bent_path())
    session = Session(method, module=network, device="cpu", refiner="none")
    network.calls = 0
    result = session.deblur(blurry)
    assert len(seen) == 1 and seen[0] > 0  # measured on the deconvolution, not on the input
    assert "20% of the photo unexplained" in " ".join(result.notes)
    if method == "auto":
        assert result.method == "network" and network.calls >= 1
    else:
        assert result.method == "kernel" and network.calls == 0


class Shifts(Recorder):
    """A network stand-in that moves every pixel by ``delta`` (as the real one redraws a photo blurred in ways
    one kernel does not describe)."""

    def __init__(self, delta: float) -> None:
        super().__init__()
        self.delta = delta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x + self.delta


@pytest.mark.parametrize(("delta", "expected"), [(0.0, "kernel"), (0.3, "network")])
def test_auto_asks_the_network_for_a_second_opinion_on_a_deconvolution(delta: float, expected: str) -> None:
    """Step 5 of decide.py: a confident deconvolution of a camera shake is kept when the network would change
    the photo less than it did (here not at all), and replaced by the network's output when the network moves
    the photo further (every pixel by 0.3: about 10 dB from the input, against the deconvolution's 20-30)."""
    network = Shifts(delta)
    blurry = blur(shapes(128, 128), bent_path())
    session = Session("auto", module=network, device="cpu", precision="fp32", refiner="none")
    network.calls = 0  # the tile planner's probe
    result = session.deblur(blurry)
    assert result.method == expected and network.calls == 1  # one pass: its output is reused when chosen
    assert result.kernel is not None and result.confidence is not None and result.confidence >= 0.5
    notes = " ".join(result.notes)
    if expected == "network":
        assert np.allclose(result.rgb, np.clip(blurry + delta, 0, 1), atol=1e-6)
        assert "the network changes the photo as much as the deconvolution" in notes
    else:
        assert shift_tolerant_psnr(result.rgb, shapes(128, 128), 5) > shift_tolerant_psnr(blurry, shapes(128, 128), 5) + 5
        assert "as much as the deconvolution" not in notes


def test_the_second_opinion_looks_at_windows_of_a_large_photo(monkeypatch: pytest.MonkeyPatch) -> None:
    """A photo over the budget (1.5 MP) is compared on windows: the network runs on those crops only, and the
    two moves are measured on the same pixels."""
    network = Shifts(0.1)
    session = Session("auto", module=network, device="cpu", precision="fp32", refiner="none")
    photo = np.random.default_rng(0).uniform(0.2, 0.8, (1200, 1400, 3)).astype(np.float32)
    sizes: list[tuple[int, ...]] = []
    original = session.run_network

    def counted(rgb: np.ndarray, progress: object = None) -> np.ndarray:
        sizes.append(rgb.shape[:2])
        return original(rgb)

    monkeypatch.setattr(session, "run_network", counted)
    kernel_db, network_db, looked = session.second_opinion(photo, photo + 0.01)
    assert looked is None and sizes == [(576, 576)] * 4
    assert kernel_db == pytest.approx(40.0, abs=0.01) and network_db == pytest.approx(20.0, abs=0.01)


def test_a_known_kernel_is_used_as_given() -> None:
    truth = shapes(96, 96, seed=3)
    kernel = bent_path()
    blurry = blur(truth, kernel)
    result = Session(kernel=kernel * 7.0, device="cpu").deblur(blurry)  # any scale: it is normalised
    assert result.method == "kernel" and result.confidence is None
    assert np.allclose(result.rgb.shape, truth.shape)
    assert shift_tolerant_psnr(result.rgb, truth, 5) > shift_tolerant_psnr(blurry, truth, 5) + 3.0


def test_small_photos_go_to_the_network_without_an_estimate() -> None:
    network = Recorder()
    session = Session("auto", module=network, device="cpu", precision="fp32")
    network.calls = 0  # the tile planner's probe
    result = session.deblur(shapes(48, 200))
    assert result.method == "network" and result.kernel is None and network.calls == 1


# ------------------------------------------------------------------------------------------------ CLI


def _png(path: Path, rgb: np.ndarray) -> Path:
    Image.fromarray(np.rint(rgb * 255).astype(np.uint8)).save(path)
    return path


def test_cli_reports_the_method_and_saves_the_kernel(tmp_path: Path, model_file: Path) -> None:
    src = _png(tmp_path / "shaky.png", blur(shapes(128, 128), bent_path()))
    result = CliRunner().invoke(
        group, [str(src), "--method", "kernel", "--save-kernel", "--compare", "--json", "--weights", str(model_file)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["method"] == "kernel" and record["kernel_size"] >= 3 and 0.0 <= record["confidence"] <= 1.0
    assert "kernel" in record["decision"]  # the reason for the choice, one line
    picture = tmp_path / "shaky_deblurred_kernel.png"
    assert record["kernel"] == str(picture)
    with Image.open(picture) as im:
        assert im.mode == "L" and im.width == im.height == 8 * record["kernel_size"]
    assert (tmp_path / "shaky_deblurred_compare.jpg").is_file()


def test_cli_sharp_photo_comes_back_pixel_identical(tmp_path: Path, still_model_file: Path, model_file: Path) -> None:
    sharp = np.rint(shapes(128, 128, seed=2) * 255) / 255
    src = _png(tmp_path / "sharp.png", sharp)
    result = CliRunner().invoke(group, [str(src), "-v", "--weights", str(still_model_file)], catch_exceptions=False)
    assert result.exit_code == 0 and "method unchanged" in result.stderr and "the photo is sharp" in result.stderr
    # A network that redraws the photo (random weights) is the partly blurred case: its output is kept.
    redrawn = CliRunner().invoke(group, [str(src), "-v", "--weights", str(model_file), "-o", str(tmp_path / "r.png")],
                                 catch_exceptions=False)
    assert redrawn.exit_code == 0 and "method network" in redrawn.stderr and "the network sharpens" in redrawn.stderr
    with Image.open(src) as a, Image.open(tmp_path / "sharp_deblurred.png") as b:
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_cli_known_kernel_file_and_its_errors(tmp_path: Path, model_file: Path) -> None:
    src = _png(tmp_path / "a.png", blur(shapes(96, 96), bent_path()))
    np.save(tmp_path / "k.npy", bent_path())
    ok = CliRunner().invoke(group, [str(src), "--kernel", str(tmp_path / "k.npy"), "--json"], catch_exceptions=False)
    assert ok.exit_code == 0 and json.loads(ok.stdout)["method"] == "kernel"
    np.save(tmp_path / "bad.npy", -bent_path())
    bad = CliRunner().invoke(group, [str(src), "--kernel", str(tmp_path / "bad.npy"), "-o", str(tmp_path / "b.png")], catch_exceptions=False)
    assert bad.exit_code == 1 and bad.stderr.count("\n") == 1 and "negative" in bad.stderr and "Traceback" not in bad.output
    clash = CliRunner().invoke(group, [str(src), "--kernel", str(tmp_path / "k.npy"), "--method", "network", "-o", str(tmp_path / "c.png")], catch_exceptions=False)
    assert clash.exit_code == 2 and "--kernel" in clash.stderr
    assert not (tmp_path / "b.png").exists() and not (tmp_path / "c.png").exists()


# ------------------------------------------------------------------------------------------ the refiner


def test_the_refiner_runs_over_the_deconvolution(model_file: Path) -> None:
    """Kernel path with a refiner = the refiner (the network engine, same tiling) applied to what the plain
    kernel path returns; without one, the deconvolution comes back as it is."""
    truth = shapes(96, 96, seed=3)
    blurry = blur(truth, bent_path())
    plain = Session(kernel=bent_path(), device="cpu", refiner="none")
    refined = Session(kernel=bent_path(), device="cpu", precision="fp32", refiner=model_file)
    assert plain.refiner is None and "no refiner" in plain.describe()
    assert refined.refiner is not None and f"refiner {model_file}" in refined.describe()
    deconvolved = plain.deblur(blurry).rgb
    out = refined.deblur(blurry)
    assert out.method == "kernel"
    assert np.array_equal(out.rgb, refined.refine(deconvolved))
    assert not np.allclose(out.rgb, deconvolved, atol=1e-3)  # a random NAFNet moves pixels


def test_the_refiner_is_not_loaded_where_the_kernel_path_cannot_run(model_file: Path) -> None:
    assert Session("network", module=Recorder(), device="cpu", refiner=model_file).refiner is None


def test_auto_refiner_is_the_catalogues_and_none_when_it_ships_none(
    model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    monkeypatch.setattr(weights, "default_refiner_name", lambda: None)
    assert Session("kernel", device="cpu").refiner is None
    loaded: list[str | None] = []

    def fake_load(name: str | None = None, weights: Path | None = None) -> nn.Module:
        loaded.append(name)
        return Recorder()

    monkeypatch.setattr(weights, "default_refiner_name", lambda: "shipped-refiner")
    monkeypatch.setattr(weights, "load_generator", fake_load)
    session = Session("kernel", device="cpu", precision="fp32")
    assert loaded == ["shipped-refiner"] and session.refiner_label == "shipped-refiner"


def test_cli_refiner_option(tmp_path: Path, model_file: Path) -> None:
    src = _png(tmp_path / "a.png", blur(shapes(96, 96), bent_path()))
    np.save(tmp_path / "k.npy", bent_path())
    common = [str(src), "--kernel", str(tmp_path / "k.npy"), "-v", "--precision", "fp32"]
    refined = CliRunner().invoke(group, [*common, "--refiner", str(model_file), "-o", str(tmp_path / "r.png")], catch_exceptions=False)
    plain = CliRunner().invoke(group, [*common, "--refiner", "none", "-o", str(tmp_path / "p.png")], catch_exceptions=False)
    assert refined.exit_code == plain.exit_code == 0, refined.output + plain.output
    assert f"refiner {model_file}" in refined.stderr and "no refiner" in plain.stderr
    with Image.open(tmp_path / "r.png") as r, Image.open(tmp_path / "p.png") as p:
        assert not np.array_equal(np.asarray(r), np.asarray(p))
