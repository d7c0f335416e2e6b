"""Python API: ``load_model`` and ``deblur_image`` for PIL images and numpy arrays.

``deblur_image`` gives back what it was given: a PIL image in the same mode (alpha, palette, 16-bit grey
kept), or a numpy array of the same shape and dtype. Only the colour channels are deblurred (by the method
``auto`` picks, as the CLI does);
alpha is carried through untouched, and grey images are run as RGB and turned back into grey with
Pillow's own luma weights so that a grey photo stays grey. Photos on disk with their metadata are the CLI's
business (:mod:`deblurcli.photo`); this module is for images a program already holds.

    >>> from deblurcli import deblur_image, load_model
    >>> model = load_model()                       # once; the default bundled model
    >>> sharp = deblur_image(pil_image, model)     # as many times as needed
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from deblurcli.errors import PhotoError

if TYPE_CHECKING:
    from PIL import Image
    from torch import nn

    from deblurcli.session import Session

ImageLike = TypeVar("ImageLike", "Image.Image", np.ndarray)

#: Pillow's RGB -> L weights (ITU-R 601), so our grey output matches what Pillow's convert("L") would give.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_INT_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
_GREY16_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")


def load_model(name: str | None = None, weights: str | Path | None = None, device: str = "auto") -> nn.Module:
    """A generator ready for :func:`deblur_image`, in eval mode on ``device``.

    ``name`` is a catalogue model (``deblur models`` lists them; None: ``$DEBLUR_MODEL``, else the bundled
    default), ``weights`` a file of any supported architecture; both at once check that the file holds the
    named model.
    """
    from deblurcli.devices import resolve_device
    from deblurcli.weights import load_generator

    target = resolve_device(device)  # first, so a wrong --device fails before any loading
    model = load_generator(name=name, weights=Path(weights) if weights is not None else None)
    return model.to(target).eval()


@functools.lru_cache(maxsize=2)
def _cached_session(
    name: str, method: str, device: str, precision: str, tile: int | None, overlap: int, strength: float,
    backend: str | None,
) -> Session:
    """A Session for callers that do not pass a model, built once per set of options and kept.

    Keyed by the model's name, not "the default", so that a later change of ``$DEBLUR_MODEL`` loads the
    newly chosen one.
    """
    from deblurcli.session import Session

    return Session(method, model=name, device=device, precision=precision, tile=tile, overlap=overlap, strength=strength,
                   backend=backend)


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=2)


def _rgb_to_grey(rgb: np.ndarray) -> np.ndarray:
    return rgb @ _LUMA


def _to_uint(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    scale = _INT_SCALE[np.dtype(dtype)]
    return np.rint(np.clip(values, 0.0, 1.0) * scale).astype(dtype)


def _split_array(array: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """(float RGB in [0, 1], alpha channel as given or None, whether the input was grey)."""
    if array.dtype in _INT_SCALE:
        scale = _INT_SCALE[array.dtype]
    elif np.issubdtype(array.dtype, np.floating):
        scale = 1.0
    else:
        raise PhotoError(f"unsupported array dtype {array.dtype}: use uint8, uint16 or float in [0, 1]")
    channels = 1 if array.ndim == 2 else array.shape[2] if array.ndim == 3 else 0
    if channels not in (1, 2, 3, 4):
        raise PhotoError(f"unsupported array shape {array.shape}: use H x W, or H x W x 1, 2, 3 or 4 channels")
    planes = array.reshape(array.shape[0], array.shape[1], channels)
    grey = channels <= 2
    colour = planes[..., :1] if grey else planes[..., :3]
    alpha = planes[..., -1] if channels in (2, 4) else None
    rgb = np.clip(colour.astype(np.float32) / np.float32(scale), 0.0, 1.0)
    return (_grey_to_rgb(rgb[..., 0]) if grey else rgb), alpha, grey


def _join_array(rgb: np.ndarray, like: np.ndarray, alpha: np.ndarray | None, grey: bool) -> np.ndarray:
    """Back to ``like``'s shape and dtype."""
    colour = _rgb_to_grey(rgb)[..., None] if grey else rgb
    colour = _to_uint(colour, like.dtype) if like.dtype in _INT_SCALE else colour.astype(like.dtype)
    planes = colour if alpha is None else np.concatenate([colour, alpha[..., None]], axis=2)
    return planes.reshape(like.shape)


def _split_pil(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """(float RGB in [0, 1], 8-bit alpha or None) of a PIL image in any mode Pillow can convert."""
    mode = image.mode
    if mode in _GREY16_MODES:
        grey = np.asarray(image).astype(np.float32) / np.float32(65535.0)
        return _grey_to_rgb(np.clip(grey, 0.0, 1.0)), None
    if mode == "F":
        return _grey_to_rgb(np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)), None
    has_alpha = "A" in image.getbands() or "a" in image.getbands() or "transparency" in image.info
    if mode in ("1", "L", "LA", "La"):
        planes = np.asarray(image.convert("LA" if has_alpha else "L"))
        grey = (planes[..., 0] if has_alpha else planes).astype(np.float32) / np.float32(255.0)
        return _grey_to_rgb(grey), (planes[..., 1] if has_alpha else None)
    planes = np.asarray(image.convert("RGBA" if has_alpha else "RGB"))
    return planes[..., :3].astype(np.float32) / np.float32(255.0), (planes[..., 3] if has_alpha else None)


def _join_pil(rgb: np.ndarray, like: Image.Image, alpha: np.ndarray | None) -> Image.Image:
    """Back to ``like``'s mode (and palette), with its alpha and info (ICC profile, DPI...) reattached."""
    from PIL import Image

    mode = like.mode
    if mode in _GREY16_MODES:
        grey16 = _to_uint(_rgb_to_grey(rgb), np.dtype(np.uint16))
        out = Image.fromarray(grey16.astype(np.int32)) if mode == "I" else Image.fromarray(grey16).convert(mode)
    elif mode == "F":
        out = Image.fromarray(_rgb_to_grey(rgb).astype(np.float32))
    elif mode in ("1", "L", "LA", "La"):
        grey = Image.fromarray(_to_uint(_rgb_to_grey(rgb), np.dtype(np.uint8)))
        if alpha is not None:
            grey = Image.merge("LA", (grey, Image.fromarray(alpha)))
        out = grey.convert(mode, dither=Image.Dither.NONE) if mode != grey.mode else grey
    elif mode == "P":
        # Same palette as the input (a new one would change every colour); transparent pixels keep the
        # transparent index.
        out = Image.fromarray(_to_uint(rgb, np.dtype(np.uint8))).quantize(palette=like, dither=Image.Dither.NONE)
        index = like.info.get("transparency")
        palette = like.getpalette()
        if alpha is not None and isinstance(index, int) and palette is not None:
            indices = np.asarray(out).copy()
            indices[alpha == 0] = index
            out = Image.fromarray(indices, "P")
            out.putpalette(palette)
    else:
        colour = _to_uint(rgb, np.dtype(np.uint8))
        planes = colour if alpha is None else np.concatenate([colour, alpha[..., None]], axis=2)
        out = Image.fromarray(planes)
        if out.mode != mode:
            out = out.convert(mode)
    out.info.update(like.info)
    return out


def deblur_image(
    image: ImageLike,
    model: nn.Module | None = None,
    *,
    method: str = "auto",
    tile: int | None = None,
    overlap: int = 32,
    device: str = "auto",
    precision: str = "auto",
    strength: float = 1.0,
    backend: str | None = None,
) -> ImageLike:
    """Deblur a PIL image or numpy array and return the same type (PIL: same mode; numpy: same dtype/shape).

    numpy arrays are ``H x W`` (grey), or ``H x W x C`` with C = 1, 2 (grey + alpha), 3 (RGB) or 4 (RGBA);
    uint8 and uint16 use their full range, floats are taken to be in [0, 1]. ``model`` defaults to the
    default model (``$DEBLUR_MODEL`` or the bundled default; loaded once and kept). ``device="auto"`` with
    a given model runs where the model is. ``method``, ``tile``, ``overlap``, ``precision``, ``strength`` and
    ``backend`` mean what the CLI's options of the same name do (``backend=None``: ``$DEBLUR_BACKEND``, else
    ``"auto"``). For many images, build a :class:`deblurcli.Session`
    once and call its ``deblur`` per image instead.
    """
    from PIL import Image

    from deblurcli.engine import check_strength
    from deblurcli.session import Session
    from deblurcli.weights import default_model_name

    check_strength(strength)
    if isinstance(image, Image.Image):
        rgb, alpha = _split_pil(image)
    elif isinstance(image, np.ndarray):
        rgb, alpha, grey = _split_array(image)
    else:
        raise PhotoError(f"deblur_image takes a PIL image or a numpy array, not {type(image).__name__}")
    if model is None:
        session = _cached_session(default_model_name(), method, device, precision, tile, overlap, strength, backend)
    else:
        options = {"device": device, "precision": precision, "tile": tile, "overlap": overlap, "strength": strength,
                   "backend": backend}
        session = Session(method, module=model, **options)
    out = session.deblur(rgb).rgb
    if isinstance(image, Image.Image):
        return _join_pil(out, image, alpha)
    return _join_array(out, image, alpha, grey)
