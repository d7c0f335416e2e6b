"""Tiled inference: exact for local models, seamless otherwise, OOM back-off, fp32 retry, strength."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest
import torch
from torch import nn

from deblurcli import engine
from deblurcli.engine import apply_strength, bf16_copy, prepare_model
from deblurcli.errors import DeblurError
from deblurcli.models.nafnet import NAFNet
from deblurcli.tiling import MAX_AUTO_TILE, auto_plan, check_tile, min_tile, plan_tiles

CPU = torch.device("cpu")


def deblur_array(
    model: nn.Module, rgb: np.ndarray, *, tile: int | None = None, overlap: int = 32, batch_size: int | None = None, **kwargs: object
) -> np.ndarray:
    """The engine with a plan made the way a Session makes it (once per run; here once per call)."""
    plan = plan_tiles(model, CPU, tile=tile, overlap=overlap, batch_size=batch_size)
    return engine.deblur_array(model, rgb, plan=plan, **{"device": CPU, **kwargs})  # type: ignore[arg-type]


class LocalConv(nn.Module):
    """Three 3x3 convolutions: receptive field radius 3, so a 4 px margin makes tiling exact."""

    size_multiple = 8
    tile_margin = 4

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1)
        )
        self.config: dict[str, object] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.5 * self.body(x)


class TileMeanShift(nn.Module):
    """Adds a tile-wide constant (like a global pool): every tile sees different statistics."""

    size_multiple = 1
    tile_margin = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.5 * (x.mean(dim=(1, 2, 3), keepdim=True) - 0.5)


class OomAbove(LocalConv):
    """LocalConv that raises the device's out-of-memory error when a batch holds too many pixels."""

    def __init__(self, max_pixels: int, error: type[Exception] = torch.cuda.OutOfMemoryError) -> None:
        super().__init__()
        self.max_pixels = max_pixels
        self.error = error
        self.seen: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(x.shape))
        if x.shape[0] * x.shape[2] * x.shape[3] > self.max_pixels:
            raise self.error("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().forward(x)


def _photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus texture, like a photo: enough structure for every tile to differ."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([xx / w, yy / h, 0.5 + 0.3 * np.sin(xx / 17.0) * np.cos(yy / 23.0)], axis=-1)
    return np.clip(0.8 * base + 0.2 * rng.random((h, w, 3), dtype=np.float32), 0, 1).astype(np.float32)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2)))


@pytest.mark.parametrize(("h", "w", "tile", "overlap", "batch"), [(100, 75, 48, 8, 1), (100, 75, 64, 0, 3), (37, 130, 56, 16, 2)])
def test_tiled_equals_whole_when_receptive_field_fits_margin(h: int, w: int, tile: int, overlap: int, batch: int) -> None:
    model, rgb = LocalConv(), _photo(h, w)
    calls: list[tuple[int, int]] = []
    whole = deblur_array(model, rgb, device=CPU, tile=0)
    tiled = deblur_array(
        model, rgb, device=CPU, tile=tile, overlap=overlap, batch_size=batch, progress=lambda d, t: calls.append((d, t))
    )
    assert calls[-1][0] == calls[-1][1] > 2  # really tiled, and progress reached the end
    assert tiled.shape == whole.shape == rgb.shape and tiled.dtype == np.float32
    assert np.abs(tiled - whole).max() < 1 / 255 / 100  # far inside the 1/255 requirement
    assert np.abs(whole - rgb).max() > 0.02  # the model is not the identity


def test_photo_border_is_reflected_not_zero_padded() -> None:
    """The network sees the photo mirrored by its tile margin on every side (and to its size multiple at the
    bottom/right), never its own zero padding at the photo's edge, whole or tiled."""
    model, rgb = LocalConv(), _photo(37, 45)
    m = model.tile_margin
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    padded = torch.nn.functional.pad(x, (m, m + 3, m, m + 3), mode="reflect")  # 45 -> 56 and 37 -> 48: multiples of 8
    with torch.no_grad():
        expected = model(padded)[0, :, m : m + 37, m : m + 45].permute(1, 2, 0).clamp(0, 1).numpy()
    assert np.abs(deblur_array(model, rgb, device=CPU, tile=0) - expected).max() < 1e-6
    assert np.abs(deblur_array(model, rgb, device=CPU, tile=40, overlap=0) - expected).max() < 1e-6
    with torch.no_grad():
        zero_padded = model(torch.nn.functional.pad(x, (0, 3, 0, 3)))[0, :, :37, :45].permute(1, 2, 0).clamp(0, 1).numpy()
    assert np.abs(zero_padded - expected)[0].max() > 0.01  # the border really differs from a zero-padded run


def _max_step(img: np.ndarray) -> float:
    return float(max(np.abs(np.diff(img, axis=0)).max(), np.abs(np.diff(img, axis=1)).max()))


def test_cross_fade_hides_tile_boundaries() -> None:
    yy, xx = np.mgrid[0:192, 0:256].astype(np.float32)
    rgb = np.repeat(((xx / 256 + yy / 192) / 2)[..., None], 3, axis=2)  # smooth: neighbours differ < 0.005
    model = TileMeanShift()
    hard = deblur_array(model, rgb, device=CPU, tile=96, overlap=0)
    soft = deblur_array(model, rgb, device=CPU, tile=96, overlap=32)
    assert _max_step(hard) > 0.04  # without a cross-fade, each tile's own shift shows as a step
    assert _max_step(soft) < _max_step(rgb) + 0.006  # with it, no step beyond the photo's own gradient


@pytest.mark.parametrize("stem", [1, 2])
def test_nafnet_local_pool_tiled_matches_whole(one_thread: None, stem: int) -> None:
    """Also for the pixel-unshuffle stem, whose levels see twice as far (its margin is twice as wide)."""
    torch.manual_seed(0)
    levels = [1] * (4 if stem == 1 else 3)
    net = NAFNet(width=8 * stem, enc_blk_nums=levels, middle_blk_num=1, dec_blk_nums=levels, local_pool=64, stem=stem)
    assert net.size_multiple == 16
    for name, p in net.named_parameters():  # beta/gamma start at 0 (identity): make every block act
        if name.endswith(("beta", "gamma")):
            nn.init.normal_(p, std=1.0)
    with torch.no_grad():  # keep the output near [0, 1] so clipping does not hide differences
        net.ending.weight.mul_(0.3)
        net.ending.bias.mul_(0.3)
    rgb = _photo(768, 1024, seed=3)
    whole = deblur_array(net, rgb, device=CPU, tile=0)
    tiled = deblur_array(net, rgb, device=CPU, tile=256, overlap=32)
    assert _psnr(whole, rgb) < 25  # the network really changes the photo
    assert ((whole == 0) | (whole == 1)).mean() < 0.03
    assert _psnr(tiled, whole) >= 45
    net.tile_margin = 0  # naive tiling (no discarded margin, no cross-fade) does show the tiles
    assert _psnr(deblur_array(net, rgb, device=CPU, tile=256, overlap=0), whole) < 45


@pytest.mark.parametrize("error", [torch.cuda.OutOfMemoryError, RuntimeError])
def test_out_of_memory_halves_tile_and_still_matches(error: type[Exception]) -> None:
    model, rgb = OomAbove(max_pixels=80 * 80, error=error), _photo(200, 150)
    calls: list[tuple[int, int]] = []
    out = deblur_array(model, rgb, device=CPU, tile=0, overlap=8, progress=lambda d, t: calls.append((d, t)))
    assert model.seen[0][2:] == (208, 160)  # first the whole image, reflected by the 4 px margin, to multiples of 8
    assert max(s[2] * s[3] for s in model.seen[-3:]) <= 80 * 80  # finished with tiles that fit
    assert calls[0] == (0, 1) and calls[-1][0] == calls[-1][1] > 1  # progress restarted for the tiled plan
    reference = deblur_array(LocalConv(), rgb, device=CPU, tile=0)
    assert np.abs(out - reference).max() < 1e-5


def test_out_of_memory_halves_batch_before_tile() -> None:
    model, rgb = OomAbove(max_pixels=64 * 64), _photo(152, 152)  # 160 px once reflected by the 4 px margin: 64 px tiles balance exactly
    deblur_array(model, rgb, device=CPU, tile=64, overlap=8, batch_size=8)
    assert {s[2:] for s in model.seen} == {(64, 64)}  # the tile size was kept
    assert model.seen[-1][0] == 1


def test_out_of_memory_at_the_floor_is_a_clear_error() -> None:
    model = OomAbove(max_pixels=10)
    with pytest.raises(DeblurError, match="out of memory on cpu even with 48 px tiles"):
        deblur_array(model, _photo(120, 120), device=CPU, tile=0, overlap=8)


def test_other_runtime_errors_are_not_mistaken_for_oom() -> None:
    model = OomAbove(max_pixels=10, error=RuntimeError)
    model.error = lambda _msg: RuntimeError("shape mismatch")  # type: ignore[assignment]
    with pytest.raises(RuntimeError, match="shape mismatch"):
        deblur_array(model, _photo(64, 64), device=CPU, tile=0)
    assert len(model.seen) == 1


class NanUnderAutocast(LocalConv):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return out * float("nan") if torch.is_autocast_enabled("cpu") else out


def test_nan_in_reduced_precision_reruns_in_fp32(caplog: pytest.LogCaptureFixture) -> None:
    rgb = _photo(64, 64)
    out = deblur_array(NanUnderAutocast(), rgb, device=CPU, precision=torch.bfloat16, tile=0)
    assert np.array_equal(out, deblur_array(LocalConv(), rgb, device=CPU, tile=0))
    assert "rerunning in fp32" in caplog.text


def test_nan_in_fp32_is_a_clear_error() -> None:
    class AlwaysNan(LocalConv):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * float("nan")

    with pytest.raises(DeblurError, match="NaN/inf"):
        deblur_array(AlwaysNan(), _photo(32, 32), device=CPU, tile=0)


def test_bf16_runs_close_to_fp32() -> None:
    model, rgb = LocalConv(), _photo(64, 80)
    low = deblur_array(model, rgb, device=CPU, precision=torch.bfloat16, tile=48, overlap=8)
    assert np.abs(low - deblur_array(model, rgb, device=CPU, tile=0)).max() < 0.03


class CastSafe(LocalConv):
    """Declares ``weights_dtype_safe`` as NAFNet does: fp32 in, body in its weights' dtype, residual in fp32.
    Records each body call's dtype and whether autocast was on (class-wide: the engine runs a copy)."""

    weights_dtype_safe = True
    calls: ClassVar[list[tuple[torch.dtype, bool]]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        body_in = x.to(self.body[0].weight.dtype)
        self.calls.append((body_in.dtype, torch.is_autocast_enabled("cpu")))
        return x + 0.5 * self.body(body_in).to(x.dtype)


def test_bf16_on_the_cpu_runs_a_cast_copy_of_a_model_that_allows_it() -> None:
    model, rgb = CastSafe(), _photo(64, 80)
    CastSafe.calls.clear()
    low = deblur_array(model, rgb, device=CPU, precision=torch.bfloat16, tile=48, overlap=8)
    assert (torch.bfloat16, False) in CastSafe.calls and (torch.float32, True) not in CastSafe.calls
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the caller's model is left as it was
    assert np.abs(low - deblur_array(LocalConv(), rgb, device=CPU, tile=0)).max() < 0.03


def test_the_bf16_copy_is_made_once_and_follows_changed_weights() -> None:
    model = CastSafe()
    first = bf16_copy(model)
    assert bf16_copy(model) is first
    with torch.no_grad():
        model.body[0].bias.add_(1.0)  # what an optimizer step or load_state_dict does
    second = bf16_copy(model)
    assert second is not first
    assert torch.equal(second.body[0].bias, model.body[0].bias.to(torch.bfloat16))


def test_other_models_keep_autocast_and_a_failing_copy_falls_back_to_it() -> None:
    class Claims(LocalConv):  # says it is safe, but feeds its fp32 input straight to bf16 weights
        weights_dtype_safe = True

    rgb = _photo(64, 80)
    reference = deblur_array(LocalConv(), rgb, device=CPU, tile=0)
    for model in (LocalConv(), Claims()):
        low = deblur_array(model, rgb, device=CPU, precision=torch.bfloat16, tile=48, overlap=8)
        assert np.abs(low - reference).max() < 0.03


def test_tiny_image() -> None:
    out = deblur_array(LocalConv().eval(), _photo(5, 3), device=CPU)
    assert out.shape == (5, 3, 3) and np.isfinite(out).all()


def test_bad_arguments_are_deblur_errors() -> None:
    model = LocalConv()
    with pytest.raises(DeblurError, match="H x W x 3"):
        deblur_array(model, np.zeros((8, 8), np.float32), device=CPU)
    with pytest.raises(DeblurError, match="empty"):
        deblur_array(model, np.zeros((0, 8, 3), np.float32), device=CPU)
    with pytest.raises(DeblurError, match="at least 48"):
        check_tile(model, 40, 8)
    with pytest.raises(DeblurError, match="overlap"):
        check_tile(model, None, -1)
    assert min_tile(NAFNet(width=8), 32) == 128


def test_auto_plan_follows_free_memory() -> None:
    model = LocalConv()
    floor = min_tile(model, 32)
    assert auto_plan(model, CPU, 32, free_bytes=1 << 10) == (floor, 1)
    cap = MAX_AUTO_TILE["cpu"]
    assert auto_plan(model, CPU, 32, free_bytes=1 << 40) == (cap, 1)
    mid, _ = auto_plan(model, CPU, 32, free_bytes=100 << 20)
    assert floor < mid < cap and mid % model.size_multiple == 0


def test_strength_blends_and_validates() -> None:
    original = np.full((2, 2, 3), 0.2, np.float32)
    assert np.allclose(apply_strength(original, np.full((2, 2, 3), 0.6, np.float32), 0.5), 0.4)
    assert np.allclose(apply_strength(original, np.full((2, 2, 3), 0.6, np.float32), 0.0), 0.2)
    assert np.allclose(apply_strength(original, np.full((2, 2, 3), 0.6, np.float32), 1.0), 0.6)
    with pytest.raises(DeblurError, match="between 0 and 1"):
        apply_strength(original, original.copy(), 1.5)


class NoisyUnderAutocast(LocalConv):
    """Finite but visibly wrong in reduced precision (a stand-in for weights whose activations bf16 rounds badly)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return out + 0.05 * torch.sin(97 * x) if torch.is_autocast_enabled("cpu") else out


def test_reduced_precision_below_45_db_falls_back_to_fp32(caplog: pytest.LogCaptureFixture) -> None:
    rgb = _photo(64, 64)
    out = deblur_array(NoisyUnderAutocast(), rgb, device=CPU, precision=torch.bfloat16, tile=0)
    assert np.array_equal(out, deblur_array(LocalConv(), rgb, device=CPU, tile=0))
    assert "dB from fp32 (need 45)" in caplog.text


def test_nafnet_bf16_passes_the_probe_and_stays_within_45_db(caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(3)
    net = NAFNet(width=8, enc_blk_nums=[1, 1], middle_blk_num=1, dec_blk_nums=[1, 1], local_pool=32)
    for name, p in net.named_parameters():
        if name.endswith(("beta", "gamma")):
            torch.nn.init.normal_(p, std=0.3)
    rgb = _photo(176, 144)
    low = deblur_array(net, rgb, device=CPU, precision=torch.bfloat16, tile=128, overlap=8)
    assert "fp32" not in caplog.text  # no fallback happened
    assert _psnr(low, deblur_array(net, rgb, device=CPU, tile=128, overlap=8)) > 45


class RecordsLayout(LocalConv):
    def __init__(self) -> None:
        super().__init__()
        self.layouts: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.layouts.append(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())
        return super().forward(x)


def test_tiles_follow_the_weights_layout_set_once_by_prepare_model() -> None:
    rgb = _photo(70, 90)
    plain = RecordsLayout().eval()
    ref = deblur_array(plain, rgb, device=CPU, tile=48, overlap=8)
    assert plain.layouts and not any(plain.layouts)  # NCHW weights (a caller's own model): NCHW tiles, no conversion
    assert all(p.is_contiguous() for p in plain.parameters())
    model = prepare_model(RecordsLayout().train(), CPU)
    assert not model.training
    out = deblur_array(model, rgb, device=CPU, tile=48, overlap=8)
    assert model.layouts and all(model.layouts)  # every batch arrived NHWC in memory
    assert np.allclose(out, ref, atol=1e-6)


def test_cuda_copies_go_through_pinned_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """No GPU here: check the wiring (pin, then a non-blocking copy) on a tensor whose methods are recorded."""
    calls: list[tuple[str, object]] = []
    batch = torch.zeros(1, 3, 4, 4)

    def pin_memory(self: torch.Tensor) -> torch.Tensor:
        calls.append(("pin", None))
        return self

    def to(self: torch.Tensor, device: torch.device, non_blocking: bool = False) -> torch.Tensor:
        calls.append(("to", (str(device), non_blocking)))
        return self

    monkeypatch.setattr(torch.Tensor, "pin_memory", pin_memory)
    monkeypatch.setattr(torch.Tensor, "to", to)
    engine._to_device(batch, torch.device("cuda", 0))
    assert calls == [("pin", None), ("to", ("cuda:0", True))]
    calls.clear()
    engine._to_device(batch, CPU)
    assert calls == [("to", ("cpu", False))]


def test_channels_last_only_for_conv_models_on_cpu_and_cuda() -> None:
    assert engine.uses_channels_last(LocalConv(), CPU)
    assert engine.uses_channels_last(LocalConv(), torch.device("cuda", 0))
    assert not engine.uses_channels_last(LocalConv(), torch.device("mps"))
    assert not engine.uses_channels_last(TileMeanShift(), CPU)  # no 4-D weights: nothing to reorder


def test_compile_wraps_once_and_is_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.compile itself takes minutes on this CPU; a recording stand-in checks the engine's use of it."""
    compiled: list[nn.Module] = []

    def fake_compile(model: nn.Module, **kwargs: object) -> nn.Module:
        compiled.append(model)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(engine, "_COMPILED", [])
    model, rgb = RecordsLayout(), _photo(40, 40)
    first = deblur_array(model, rgb, device=CPU, tile=0, compile=True)
    deblur_array(model, rgb, device=CPU, tile=0, compile=True)
    assert compiled == [model] and len(model.layouts) == 2
    other = LocalConv()
    deblur_array(other, rgb, device=CPU, tile=0, compile=True)
    assert compiled == [model, other]
    assert np.array_equal(first, deblur_array(LocalConv(), rgb, device=CPU, tile=0))


@pytest.mark.parametrize("shape", [(9, 13), (3, 2), (1, 1)])
def test_reflected_window_matches_gathering_every_reflected_pixel(shape: tuple[int, int]) -> None:
    """Windows inside, across either border, beyond both and around a photo too small to reflect: the slice
    and 1-D gather path reads exactly what indexing the reflected coordinates reads."""
    h, w = shape
    image = torch.arange(h * w * 3, dtype=torch.float32).view(h, w, 3)
    for y0, height in [(0, h), (-2, h + 4), (h - 2, 5), (-7, 3), (1, max(1, h - 2))]:
        for x0, width in [(0, w), (-3, 2), (w - 1, 4), (-1, w + 9)]:
            rows = engine._reflect(torch.arange(y0, y0 + height), h)
            cols = engine._reflect(torch.arange(x0, x0 + width), w)
            expected = image[rows[:, None], cols[None, :]]
            assert torch.equal(engine._reflected_window(image, y0, height, x0, width), expected), (y0, height, x0, width)
