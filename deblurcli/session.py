"""One inference session: options resolved once, then ``session.deblur(rgb)`` per photo.

Every front end -- ``deblur``, ``deblur eval``, ``deblur cluster`` / Ray actors, the Python API, the benches --
builds a :class:`Session` and calls it per photo, as Real-ESRGAN's ``RealESRGANer`` is built once and
``enhance()``d per image. Building it resolves, in this order and once:

1. the device (an absent device is an error, :mod:`deblurcli.devices`) and the compute precision;
2. the method: ``network`` (the learned generator), ``kernel`` (blind kernel estimation + non-blind
   deconvolution, :mod:`deblurcli.kernel`) or ``auto`` (per photo, :mod:`deblurcli.decide`);
3. the generator, when the method may need it (loaded, moved to the device, eval mode, NHWC weights on
   CPU/CUDA), and its tile plan (:mod:`deblurcli.tiling`: one probe forward pass for ``--tile auto``);
4. the refiner, when the kernel method may run: a network that takes the deconvolution (its ringing,
   amplified noise and small kernel errors) to a sharp photo (the catalogue's ``refine`` entry by default,
   none when the catalogue ships none), with a tile plan of its own;
5. the backend of each network (:mod:`deblurcli.backends`): torch, or OpenVINO on CPU (``backend="auto"``
   picks it where it is installed and can run the network in bf16).

Failures here are :class:`~deblurcli.errors.DeblurError` subclasses the caller shows as one line; nothing is
read or written yet. Per photo, :meth:`Session.deblur` returns a :class:`Result` that says which method ran,
and for the kernel path the kernel and its confidence, so the CLI can report them (``-v``, ``--json``) and
draw them (``--save-kernel``, ``--compare``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from deblurcli.decide import BLUR_DOMAINS, METHODS
from deblurcli.errors import DeblurError, OptionError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from deblurcli.kernel.domain import Domain

    from deblurcli.backends.openvino import OpenVINONetwork
    from deblurcli.kernel.estimate import KernelEstimate
    from deblurcli.tiling import TilePlan

log = logging.getLogger(__name__)

Method = Literal["auto", "network", "kernel"]
#: What a Result says ran: the generator, deconvolution with an estimated or given kernel, or nothing
#: (the gate found the photo sharp, or auto found no safe method and the network is unavailable).
Ran = Literal["network", "kernel", "unchanged"]

ProgressFn = Callable[[int, int], None]


@dataclass
class Result:
    """One deblurred photo and how it was made.

    ``rgb`` is ``H x W x 3`` float32 in [0, 1] with ``--strength`` applied. ``kernel`` is the kernel that was
    deconvolved with (or estimated, when auto chose the network), ``confidence`` the estimator's score; both
    None when no kernel was looked for. ``notes`` are one-line explanations of the choice (``-v``).
    ``point`` is True when the estimate was a point (the sharp-photo gate fired), so a network result with it
    is a photo blurred only in part (:mod:`deblurcli.partial_blur`); ``patched`` then says how much of it the
    network's output covers when it was kept in those parts only (None: the whole photo).
    """

    rgb: np.ndarray
    method: Ran
    kernel: np.ndarray | None = None
    confidence: float | None = None
    notes: list[str] = field(default_factory=list)
    point: bool = False
    #: share of the photo taken from the network when auto kept its output in part of a sharp-looking photo only
    patched: float | None = None

    @property
    def kernel_size(self) -> int | None:
        return None if self.kernel is None else int(self.kernel.shape[0])


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of an ``H x W x 3`` photo as encoded: what the kernel estimator looks at."""
    return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


class Session:
    """Deblurs photos with options resolved once. See the module docstring for what is resolved when.

    ``model`` names a catalogue model (None: ``$DEBLUR_MODEL`` or the bundled default), ``weights`` a file;
    ``module`` is an already-built generator (the Python API's ``deblur_image(image, model)``): its device is
    used under ``device="auto"`` and its weights' memory layout is left as the caller has it. ``kernel`` is a
    known blur kernel (a PSF file, or a 2-D array): the photo is deconvolved with it, nothing is estimated.
    ``kernel_size`` is the largest kernel the estimator looks for, in pixels of the photo. ``refiner``:
    ``"auto"`` (the catalogue's refiner, if one is shipped), ``"none"``/None, a catalogue name, or a weights file.
    ``backend``: ``"auto"``, ``"torch"`` or ``"openvino"``; None: ``$DEBLUR_BACKEND``, else auto
    (:func:`deblurcli.backends.resolve_backend`). ``blur_domain``: where the kernel method estimates and
    deconvolves, ``"srgb"`` (the photo's values), ``"linear"`` (light, as a camera blurs it) or ``"auto"``
    (judged per blurred photo, :meth:`domain_of`; :mod:`deblurcli.kernel.domain`).
    """

    def __init__(
        self,
        method: Method | str = "auto",
        *,
        model: str | None = None,
        weights: str | Path | None = None,
        module: nn.Module | None = None,
        device: str = "auto",
        precision: str = "auto",
        tile: int | None = None,
        overlap: int = 32,
        batch_size: int | None = None,
        threads: int | None = None,
        compile: bool = False,
        strength: float = 1.0,
        kernel: str | Path | np.ndarray | torch.Tensor | None = None,
        kernel_size: int = 35,
        refiner: str | Path | None = "auto",
        backend: str | None = None,
        blur_domain: str = "auto",
    ) -> None:
        from deblurcli.devices import resolve_device, resolve_precision, set_threads
        from deblurcli.engine import check_strength

        if method not in METHODS:
            raise OptionError(f"unknown method {method!r}: use {', '.join(METHODS)}", "--method")
        if kernel is not None and method == "network":
            raise OptionError("a known kernel is for the kernel method: drop --kernel or use --method kernel", "--kernel")
        check_strength(strength)
        if kernel_size < 3:
            raise OptionError(f"must be at least 3 px, got {kernel_size}", "--kernel-size")
        if blur_domain not in BLUR_DOMAINS:
            raise OptionError(f"unknown blur domain {blur_domain!r}: use {', '.join(BLUR_DOMAINS)}", "--blur-domain")
        self.blur_domain: Domain = blur_domain  # type: ignore[assignment]
        if threads is not None:
            set_threads(threads)
        self.method: Method = "kernel" if kernel is not None else method  # type: ignore[assignment]
        self.strength, self.overlap, self.compile, self.kernel_size = strength, overlap, compile, kernel_size
        placed = _module_device(module) if module is not None and device == "auto" else None
        self.device: torch.device = placed if placed is not None else resolve_device(device)
        self.device_picked = device == "auto"
        self.precision: torch.dtype = resolve_precision(precision, self.device, inference=True)
        self.known_kernel = None if kernel is None else _as_kernel(kernel)
        self.backend_choice = backend
        self.model: nn.Module | None = None
        self.backend: OpenVINONetwork | None = None
        self.model_label = ""
        self.plan: TilePlan | None = None
        if self.method != "kernel":
            self._load_network(model, weights, module, tile, batch_size)
        self.refiner: nn.Module | None = None
        self.refiner_label = ""
        self.refiner_plan: TilePlan | None = None
        self.refiner_backend: OpenVINONetwork | None = None
        if self.method != "network":
            self._load_refiner(refiner, tile, batch_size)

    # ------------------------------------------------------------------------------------------ set-up

    def _load_network(
        self, name: str | None, weights: str | Path | None, module: nn.Module | None, tile: int | None, batch_size: int | None
    ) -> None:
        from deblurcli.backends import resolve_backend
        from deblurcli.engine import prepare_model
        from deblurcli.tiling import plan_tiles
        from deblurcli.weights import default_model_name, load_generator

        if module is not None:
            self.model = module.to(self.device).eval()
            self.model_label = type(module).__name__
        else:
            # Resolved here rather than inside load_generator so that -v names the model $DEBLUR_MODEL or the catalogue picked.
            name = name if name is not None or weights is not None else default_model_name()
            path = None if weights is None else Path(weights)
            self.model = prepare_model(load_generator(name=name, weights=path), self.device)
            self.model_label = str(weights) if weights is not None else str(name)
        self.plan = plan_tiles(self.model, self.device, tile=tile, overlap=self.overlap, batch_size=batch_size)
        self.backend = resolve_backend(self.backend_choice, self.model, self.device, self.precision, compile=self.compile)
        self.plan = _fill_streams(self.plan, self.backend, batch_size)

    def _load_refiner(self, refiner: str | Path | None, tile: int | None, batch_size: int | None) -> None:
        from deblurcli.backends import resolve_backend
        from deblurcli.engine import prepare_model
        from deblurcli.tiling import plan_tiles
        from deblurcli.weights import default_refiner_name, load_generator

        if isinstance(refiner, str) and refiner.strip().lower() in ("auto", "none", ""):
            refiner = default_refiner_name() if refiner.strip().lower() == "auto" else None
        if refiner is None:
            return
        module = load_generator(weights=Path(refiner)) if is_weights_file(refiner) else load_generator(name=str(refiner))
        self.refiner = prepare_model(module, self.device)
        self.refiner_label = str(refiner)
        self.refiner_plan = plan_tiles(self.refiner, self.device, tile=tile, overlap=self.overlap, batch_size=batch_size)
        self.refiner_backend = resolve_backend(self.backend_choice, self.refiner, self.device, self.precision, compile=self.compile)
        self.refiner_plan = _fill_streams(self.refiner_plan, self.refiner_backend, batch_size)

    def with_strength(self, strength: float) -> Session:
        """This session at another ``strength``, sharing its loaded networks and tile plans.

        Strength only blends the finished result with the input, so a front end where the user moves a
        strength slider (``deblur serve``) need not load the model again for each value; the copy gives the
        same pixels as a Session built with that strength. Its photos must not run at the same time as this
        session's (the networks are shared).
        """
        import copy

        from deblurcli.engine import check_strength

        check_strength(strength)
        other = copy.copy(self)
        other.strength = strength
        return other

    def describe(self) -> str:
        """One line for ``-v``: what every photo of the run goes through."""
        precision = str(self.precision).replace("torch.", "")
        parts = [f"method {self.method}", f"device {self.device}{' (auto)' if self.device_picked else ''}"]
        if self.model is not None and self.plan is not None:
            parts += [f"model {self.model_label} ({type(self.model).__name__})", f"precision {precision}"]
            parts += [f"backend {_backend_name(self.backend)}", self.plan.describe()]
        if self.method != "network":
            parts.append("known kernel" if self.known_kernel is not None else f"kernels up to {self.kernel_size} px")
            parts.append(f"blur domain {self.blur_domain}")
            refiner = f"refiner {self.refiner_label} (backend {_backend_name(self.refiner_backend)})"
            parts.append(refiner if self.refiner is not None else "no refiner")
        return ", ".join(parts)

    # ---------------------------------------------------------------------------------------- per photo

    def deblur(self, rgb: np.ndarray, progress: ProgressFn | None = None) -> Result:
        """Deblur one ``H x W x 3`` float32 photo in [0, 1]; the input array is not modified."""
        from deblurcli.engine import apply_strength

        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise DeblurError(f"expected an H x W x 3 RGB array, got shape {tuple(rgb.shape)}")
        if rgb.shape[0] == 0 or rgb.shape[1] == 0:
            raise DeblurError("the image is empty (zero width or height)")
        if self.method == "network":
            result = Result(self.run_network(rgb, progress), "network")
        elif self.known_kernel is not None:
            noise = _noise_of(rgb)
            domain, notes = self.domain_of(rgb, None, self.known_kernel, noise)
            out = self.refine(self.run_kernel(rgb, self.known_kernel, noise, progress, domain=domain), progress)
            result = Result(out, "kernel", self.known_kernel.numpy(), notes=notes)
        else:
            result = self._estimated(rgb, progress)
        if result.method != "unchanged":
            result.rgb = apply_strength(rgb, result.rgb, self.strength)
        return result

    def run_network(self, rgb: np.ndarray, progress: ProgressFn | None = None) -> np.ndarray:
        """The generator through the tiled engine, with the session's plan and precision."""
        from deblurcli.engine import deblur_array

        if self.model is None or self.plan is None:
            raise DeblurError("this session has no network (method 'kernel')")
        return deblur_array(
            self.model, rgb, device=self.device, plan=self.plan, precision=self.precision, progress=progress,
            compile=self.compile, backend=self.backend,
        )

    def refine(self, deconvolved: np.ndarray, progress: ProgressFn | None = None) -> np.ndarray:
        """The refiner over a deconvolution (with the network's precision); the input itself without one."""
        from deblurcli.engine import deblur_array

        if self.refiner is None or self.refiner_plan is None:
            return deconvolved
        return deblur_array(
            self.refiner, deconvolved, device=self.device, plan=self.refiner_plan, precision=self.precision,
            progress=progress, compile=self.compile, backend=self.refiner_backend,
        )

    def run_kernel(
        self, rgb: np.ndarray, kernel: torch.Tensor, noise: float | None, progress: ProgressFn | None = None,
        *, domain: Domain | None = None,
    ) -> np.ndarray:
        """Non-blind deconvolution of the whole photo with ``kernel``, tiled through the engine (always fp32:
        FFT-based deconvolution amplifies the rounding of reduced precision). ``noise`` is the encoded photo's
        noise std (measured when None); ``domain`` defaults to the session's (sRGB under "auto")."""
        import torch

        from deblurcli.engine import deblur_array
        from deblurcli.kernel.deconv import Deconvolver
        from deblurcli.kernel.domain import linear_noise
        from deblurcli.tiling import plan_tiles

        domain = domain or self._fixed_domain
        if noise is None:
            noise = _noise_of(rgb)
        if domain == "linear":
            noise = linear_noise(torch.from_numpy(np.ascontiguousarray(rgb)), noise)
        deconvolver = Deconvolver(kernel.to(self.device), noise=noise, domain=domain).to(self.device)
        plan = plan_tiles(deconvolver, self.device, tile=_deconv_tile(deconvolver, self.device), overlap=self.overlap, batch_size=1)
        return deblur_array(deconvolver, rgb, device=self.device, plan=plan, precision=torch.float32, progress=progress)

    def _estimated(self, rgb: np.ndarray, progress: ProgressFn | None) -> Result:
        """Kernel method or auto: estimate, gate, then deconvolve or hand the photo to the network."""
        from deblurcli.decide import after_deconvolution, after_gate, against_network, decide, without_estimate
        from deblurcli.partial_blur import changed_share, patch

        has_network = self.model is not None
        early = without_estimate(method=self.method, photo_shape=rgb.shape[:2], has_network=has_network)
        if early is not None:
            out = self.run_network(rgb, progress) if early.method == "network" else rgb.copy()
            return Result(out, early.method, notes=[early.reason])
        estimate = self.estimate(rgb)
        # Deconvolution, the domain test and the whole-photo check take the noise of the photo as encoded (they
        # rescale it for linear light); an estimate in linear light measured the decoded values' noise, and one
        # under 64 px measured none.
        noise = estimate.details.get("noise") if self._fixed_domain == "srgb" else None
        if noise is None:
            noise = _noise_of(rgb)
        domain, domain_notes = self._fixed_domain, []
        if self.blur_domain == "auto" and not estimate.near_delta and estimate.size > 1:
            in_light = self.estimate(rgb, domain="linear", like=estimate)
            domain, domain_notes = self.domain_of(rgb, estimate.region, in_light.kernel.detach().cpu(), noise)
            if domain == "linear":
                estimate = in_light
        elif self.blur_domain == "linear":
            domain_notes = ["kernel estimated in linear light (--blur-domain linear)"]
        kernel = estimate.kernel.detach().cpu()
        choice = decide(estimate, method=self.method, has_network=has_network)
        looked = None
        if choice.method == "unchanged" and estimate.near_delta and self.method == "auto" and has_network:
            # The gate saw a sharp background; a subject moving elsewhere shows in what the network changes.
            looked = self.run_network(rgb, progress)
            choice = after_gate(changed_share(rgb, looked))
        common = {"kernel": kernel.numpy(), "confidence": estimate.confidence,
                  "notes": [*domain_notes, *estimate.notes, choice.reason]}
        log.debug("%s (kernel %d px, confidence %.2f): %s", choice.method, estimate.size, estimate.confidence, choice.reason)
        if choice.method == "unchanged":
            return Result(rgb.copy(), "unchanged", **common)
        if looked is not None and choice.partial:
            out, share = patch(rgb, looked)
            return Result(out, "network", point=True, patched=share, **common)
        if looked is not None:
            return Result(looked, "network", point=True, **common)
        if choice.method == "network":
            return Result(self.run_network(rgb, progress), "network", **common)
        deconvolved = self.run_kernel(rgb, kernel, noise, progress, domain=domain)
        late = after_deconvolution(self.unexplained(rgb, deconvolved, kernel, noise, domain=domain), method=self.method,
                                   has_network=has_network)
        if late is not None:
            log.debug("%s: %s", late.method, late.reason)
            common["notes"].append(late.reason)
            if late.method != "kernel":
                out = self.run_network(rgb, progress) if late.method == "network" else rgb.copy()
                return Result(out, late.method, **common)
        refined = self.refine(deconvolved, progress)
        if self.method == "auto" and has_network:
            kernel_db, network_db, looked = self.second_opinion(rgb, refined, progress)
            late = against_network(kernel_db, network_db)
            if late is not None:
                log.debug("%s: %s", late.method, late.reason)
                common["notes"].append(late.reason)
                return Result(looked if looked is not None else self.run_network(rgb, progress), "network", **common)
        return Result(refined, "kernel", **common)

    def second_opinion(
        self, rgb: np.ndarray, deblurred: np.ndarray, progress: ProgressFn | None = None,
    ) -> tuple[float, float, np.ndarray | None]:
        """How far ``deblurred`` (the kernel path's output) and the network's output moved ``rgb`` (PSNR, dB), on
        the whole photo or on :func:`deblurcli.second_opinion.windows` of a large one, and the network's output
        when it was run on the whole photo (None: on windows only)."""
        from deblurcli.metrics import psnr
        from deblurcli.second_opinion import windows

        spots = windows(rgb.shape[:2])
        if spots is None:
            looked = self.run_network(rgb, progress)
            return psnr(deblurred, rgb), psnr(looked, rgb), looked
        photo = np.stack([rgb[crop][inner] for crop, inner in spots])
        kernel_out = np.stack([deblurred[crop][inner] for crop, inner in spots])
        network_out = np.stack([self.run_network(rgb[crop])[inner] for crop, inner in spots])
        return psnr(kernel_out, photo), psnr(network_out, photo), None

    def unexplained(
        self, rgb: np.ndarray, deconvolved: np.ndarray, kernel: torch.Tensor, noise: float, *, domain: Domain | None = None,
    ) -> float:
        """Share of ``rgb`` (luma) that its deconvolution with ``kernel`` does not re-blur back to (the last step of
        :mod:`deblurcli.decide`), in ``domain`` (default: the session's); ``noise`` is the encoded photo's noise std."""
        import torch

        from deblurcli.kernel.domain import linear_noise, to_linear
        from deblurcli.kernel.residual import unexplained_share

        grey, restored = (torch.from_numpy(np.ascontiguousarray(luma(a))) for a in (rgb, deconvolved))
        if (domain or self._fixed_domain) == "linear":
            noise = linear_noise(grey, noise)
            grey, restored = to_linear(grey), to_linear(restored)
        return unexplained_share(grey, restored, kernel, noise)

    @property
    def _fixed_domain(self) -> Domain:
        """The domain used where nothing is chosen per photo: the session's, sRGB under "auto"."""
        return "linear" if self.blur_domain == "linear" else "srgb"

    def domain_of(
        self, rgb: np.ndarray, region: tuple[int, int, int, int] | None, kernel: torch.Tensor, noise: float,
    ) -> tuple[Domain, list[str]]:
        """The blur domain of ``rgb`` under the session's ``blur_domain`` and a note saying it, judged (under
        "auto") on ``region`` (the estimation window; None: a centred one) with the linear-light ``kernel``."""
        import torch

        from deblurcli.kernel.domain import choose_domain
        from deblurcli.kernel.estimate import MAX_WINDOW

        if self.blur_domain != "auto":
            return self._fixed_domain, []
        h, w = rgb.shape[:2]
        if region is None:
            side = min(MAX_WINDOW, h, w)
            region = ((h - side) // 2, (w - side) // 2, side, side)
        y0, x0, bh, bw = region
        window = torch.from_numpy(np.ascontiguousarray(rgb[y0 : y0 + bh, x0 : x0 + bw])).permute(2, 0, 1)
        domain, ratio = choose_domain(window, kernel, noise)
        where = "linear light" if domain == "linear" else "sRGB"
        return domain, [f"blurred in {where} (out-of-range ratio {ratio:.1f} of linear to sRGB deconvolution)"]

    def estimate(
        self, rgb: np.ndarray, *, domain: Domain | None = None, like: KernelEstimate | None = None,
    ) -> KernelEstimate:
        """The blind kernel estimate of ``rgb`` (on its luma; the luma of linear light in ``domain`` "linear",
        which defaults to the session's, sRGB under "auto"), for kernels up to the session's maximum size and at
        most a tenth of the photo's shorter side (:func:`max_kernel_size`).

        ``like`` is an estimate of the same photo in the other domain: its windows and kernel size are reused, so
        only those windows (and the centre crop the noise is measured on) are decoded, not the whole photo
        (decoding 12 MP takes about a second on two cores, the estimate itself 3 s)."""
        import torch

        from deblurcli.kernel.domain import to_linear
        from deblurcli.kernel.estimate import estimate_kernel

        linear = (domain or self._fixed_domain) == "linear"
        if like is not None and like.windows:
            return self._estimate_in(rgb, like, linear)
        if linear:
            rgb = to_linear(torch.from_numpy(rgb)).numpy()
        grey = torch.from_numpy(np.ascontiguousarray(luma(rgb))).to(self.device)
        return estimate_kernel(grey, max_size=max_kernel_size(self.kernel_size, rgb.shape[:2]))

    def _estimate_in(self, rgb: np.ndarray, like: KernelEstimate, linear: bool) -> KernelEstimate:
        """The estimate of ``rgb`` on ``like``'s windows, in linear light or as encoded."""
        import torch

        from deblurcli.kernel.confidence import noise_sigma
        from deblurcli.kernel.domain import to_linear
        from deblurcli.kernel.estimate import NOISE_SIDE, estimate_in_windows

        def grey(y0: int, x0: int, h: int, w: int) -> torch.Tensor:
            crop = torch.from_numpy(np.ascontiguousarray(rgb[y0 : y0 + h, x0 : x0 + w]))
            if linear:
                crop = to_linear(crop)
            return torch.from_numpy(luma(crop.numpy())).to(self.device)

        h, w = rgb.shape[:2]
        ch, cw = min(NOISE_SIDE, h), min(NOISE_SIDE, w)  # the centre crop estimate_kernel measures noise on
        sigma = noise_sigma(grey((h - ch) // 2, (w - cw) // 2, ch, cw))
        windows = torch.stack([grey(*box) for box in like.windows])
        return estimate_in_windows(windows, like.windows, max_size=int(like.details["search"]), noise=sigma)


#: A kernel is looked for only up to this share of the photo's shorter side: a 128 px photo constrains a
#: 35 px kernel too little (on synthetic 128 px scenes a 35 px search found 7 px streaks on sharp photos
#: and wrong kernels on blurred ones, where an 11 px search recovered the kernel at NCC >= 0.9).
MAX_KERNEL_SHARE = 0.1
#: ... but never below this (mild shake of 3-7 px must still be found).
MIN_KERNEL_SEARCH = 7


def _noise_of(rgb: np.ndarray) -> float:
    """Noise std of a photo's luma (what sets deconvolution's regulariser and the whole-photo check's residual scale)."""
    import torch

    from deblurcli.kernel.noise import estimate_noise

    return estimate_noise(torch.from_numpy(np.ascontiguousarray(luma(rgb)))[None])


def is_weights_file(refiner: str | Path) -> bool:
    """Whether a ``--refiner`` value names a weights file (by its suffix) rather than a catalogue model."""
    return isinstance(refiner, Path) or Path(refiner).suffix.lower() in (".safetensors", ".pth", ".pt")


def max_kernel_size(requested: int, shape: tuple[int, int]) -> int:
    """The largest (odd) kernel side to search on a photo of ``shape`` when the user allows ``requested``."""
    cap = max(MIN_KERNEL_SEARCH, int(min(shape) * MAX_KERNEL_SHARE))
    size = min(requested, cap)
    return size if size % 2 == 1 else size - 1


#: Deconvolution tiles: FFT cost grows as N log N, so large tiles cost little more per pixel, and memory per
#: pixel is a few dozen float32 planes. Each tile also solves a margin of 3 kernel sizes on every side, which
#: at 1024 px and a 35 px kernel is 45 % of its pixels: on a 12 MP photo (2 threads, 2026-12-03) 1536 px tiles
#: took 7.4-7.7 s against 8.5-8.8 s at 1024 and 8.2-8.5 s at 2048 with a 35 px kernel, 5.6 s against 5.6-5.7 s
#: with a 15 px one, for 1.5-1.6 GiB peak RSS against 1.2-1.3 (docs/performance.md, "The kernel path").
DECONV_TILE = {"cpu": 1536, "mps": 1024, "cuda": 2048}


def _deconv_tile(deconvolver: nn.Module, device: torch.device) -> int:
    margin = int(getattr(deconvolver, "tile_margin", 0))
    return max(DECONV_TILE.get(device.type, 1024), 4 * margin + 64)


def _fill_streams(plan: TilePlan, backend: OpenVINONetwork | None, batch_size: int | None) -> TilePlan:
    """``plan`` with at least one tile per OpenVINO stream in a batch, so that its infer requests overlap
    (a CPU plan has one tile per batch); a batch size the caller chose is kept."""
    import dataclasses

    if backend is None or batch_size is not None or plan.tile == 0 or plan.batch_size >= backend.streams:
        return plan
    return dataclasses.replace(plan, batch_size=backend.streams)


def _backend_name(backend: OpenVINONetwork | None) -> str:
    return "torch" if backend is None else backend.describe()


def _module_device(module: nn.Module) -> torch.device | None:
    param = next(iter(module.parameters()), None)
    return None if param is None else param.device


def _as_kernel(kernel: str | Path | np.ndarray | torch.Tensor) -> torch.Tensor:
    """A user's kernel as a normalised, centred float32 tensor (files through :func:`kernel.psf.read_kernel`)."""
    import torch

    from deblurcli.kernel.psf import normalise_kernel, read_kernel

    if isinstance(kernel, (str, Path)):
        return read_kernel(Path(kernel))
    return normalise_kernel(torch.as_tensor(np.asarray(kernel), dtype=torch.float32))
