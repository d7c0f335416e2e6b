"""How deblurcli decides, per photo, between deconvolving with the estimated kernel and the network.

A pure function of the kernel estimate (:mod:`deblurcli.kernel.estimate`), so the rule can be read, tested
and documented in one place (docs/how_deblurcli_decides.md explains it for users):

1. **Sharp** -- the estimate is a near-delta (most of its mass in one 3x3 window): the photo is returned
   unchanged, bit for bit. Deconvolving a sharp photo with a near-delta kernel over-sharpens it and
   shifts it by half a pixel (23.7-34.0 dB from the input, KERNEL_PATH.md); the network alters it too.
   Under auto the network gets a look first (:func:`after_gate`): the estimate saw two windows, and a
   subject moving elsewhere on a still, sharp background is blur the gate cannot see. When the network
   redraws at least :data:`MIN_CHANGED` of the photo's blocks (:mod:`deblurcli.partial_blur`), its output
   is returned instead; when it redraws fewer, but some, its output is kept in those parts only (a patch,
   feathered into the untouched photo). A photo the network redraws nowhere comes back bit for bit.
2. **Camera shake** -- the estimator is confident (its re-blur residual matches the noise, the kernel is
   compact and the same across kernel sizes and regions): deconvolve. This is where physics beats the
   learned model (+6 dB with a good kernel against ~0 dB for the network on recorded shake).
3. **Anything else** -- an unconfident estimate means the blur is not one kernel (moving objects,
   spatially varying shake, defocus) or the photo gives the estimator too little to work with (flat,
   tiny, noise): the network, which never makes such photos worse by deconvolving with a wrong kernel.
4. **Checked after deconvolving** -- the kernel was judged on a few windows; where a moving object is
   blurred by its own motion elsewhere in the photo, the deconvolution re-blurred by the kernel misses the
   input by far more than the noise (:mod:`deblurcli.kernel.residual`). When more than
   :data:`MAX_UNEXPLAINED` of the photo is missed like that, auto hands the photo to the network after all.
5. **A second opinion** -- a deconvolution fits the photo through any kernel it is given, so a confident,
   wrong kernel (the windows held a shake, the rest of the photo other blur) passes step 4. Auto then runs
   the network too and compares how far each moved the photo (:mod:`deblurcli.second_opinion`): on a camera
   shake the deconvolution moves it much further; where the network moves it at least as far, it has found
   blur it knows, and its output is returned (:func:`against_network`).

Between steps 1 and 2, a photo that is not sharp is estimated again in linear light and the blur's domain is
judged (``--blur-domain auto``, :meth:`deblurcli.session.Session.domain_of`); steps 2-4 then judge and use
that domain's estimate.

``--method kernel`` skips step 3's fallback (the user asked for deconvolution: an unconfident estimate is
still used, with a note) but keeps the sharp-photo gate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from deblurcli.kernel.estimate import KernelEstimate

#: ``--method`` choices, in the order the CLI lists them.
METHODS: tuple[str, ...] = ("auto", "network", "kernel")
#: ``--blur-domain`` choices: where the kernel method estimates and deconvolves (:mod:`deblurcli.kernel.domain`).
#: Here, not there, so that the CLI lists them without importing torch.
BLUR_DOMAINS: tuple[str, ...] = ("srgb", "linear", "auto")
#: Confidence at which auto trusts the kernel (the estimator calibrates its score so that >= 0.5 means
#: "deconvolving with it is expected to help").
MIN_CONFIDENCE = 0.5
#: Share of the photo's blocks the kernel may leave unexplained (``kernel.residual``) before auto calls the
#: photo a dynamic scene and uses the network.
MAX_UNEXPLAINED = 0.025
#: Share of a sharp-looking photo's blocks the network must change by more than
#: :data:`deblurcli.partial_blur.CHANGED_DB` for auto to call it blurred in part and keep the network's output
#: (sharp photos measured 0-0.2 %, a moving subject on a still background 1.4-4 %).
MIN_CHANGED = 0.01
#: Auto keeps a deconvolution only where it moved the photo further than the network does, by more than this
#: (dB of PSNR against the input; :mod:`deblurcli.second_opinion`).
MIN_LEAD_DB = 0.0
#: Below this side (px) the estimator has too little to go on; auto uses the network.
MIN_SIDE = 64


@dataclass(frozen=True)
class Choice:
    """What to run on one photo and the one-line reason (shown with ``-v`` and in ``--json`` notes)."""

    method: Literal["kernel", "network", "unchanged"]
    reason: str
    #: the network's output is kept only where it redrew the photo (:func:`deblurcli.partial_blur.patch`)
    partial: bool = False


def without_estimate(*, method: str, photo_shape: tuple[int, int], has_network: bool) -> Choice | None:
    """The choice that needs no kernel estimate, if any: auto sends photos too small to estimate on to the
    network at once (the estimate would be noise, and would cost time)."""
    if method == "auto" and min(photo_shape) < MIN_SIDE:
        fallback = "network" if has_network else "unchanged"
        return Choice(fallback, f"too small for kernel estimation (under {MIN_SIDE} px): {fallback}")
    return None


def decide(estimate: KernelEstimate, *, method: str, has_network: bool) -> Choice:
    """The method for one photo under ``--method`` ``auto`` or ``kernel``, from its kernel estimate."""
    if estimate.near_delta:
        return Choice("unchanged", "the photo is sharp (the estimated kernel is a point): left unchanged")
    if method == "kernel":
        if estimate.confidence < MIN_CONFIDENCE:
            return Choice("kernel", f"low confidence {estimate.confidence:.2f}, deconvolved anyway (--method kernel)")
        return Choice("kernel", f"camera shake: a {estimate.size} px kernel, confidence {estimate.confidence:.2f}")
    fallback: Literal["network", "unchanged"] = "network" if has_network else "unchanged"
    if estimate.confidence >= MIN_CONFIDENCE:
        return Choice("kernel", f"camera shake: a {estimate.size} px kernel, confidence {estimate.confidence:.2f}")
    return Choice(fallback, f"not a single camera-shake kernel (confidence {estimate.confidence:.2f}): {fallback}")


def after_gate(changed: float) -> Choice:
    """Auto's second look at a photo the gate called sharp: ``changed`` is the share of its blocks the network
    changed a lot (:func:`deblurcli.partial_blur.changed_share`). The network's output when that share reaches
    :data:`MIN_CHANGED` (a subject blurred by its own motion), that output in the changed parts only when some
    but fewer blocks changed (a subject that moves a little), else the photo unchanged."""
    if changed >= MIN_CHANGED:
        return Choice("network", f"sharp where the kernel was estimated, but the network sharpens {changed:.1%} of "
                                 "the photo (a moving subject?): network")
    if changed > 0:
        return Choice("network", f"sharp where the kernel was estimated, but the network sharpens {changed:.1%} of "
                                 "the photo (a moving subject?): network there only", partial=True)
    return Choice("unchanged", "the photo is sharp (the estimated kernel is a point, and the network changes no part "
                               "of it much): left unchanged")


def after_deconvolution(unexplained: float, *, method: str, has_network: bool) -> Choice | None:
    """The last step (after deconvolving): None when the kernel explains the photo (``unexplained`` at most :data:`MAX_UNEXPLAINED`), else
    what to return instead: auto hands the photo to the network; ``--method kernel`` keeps the deconvolution,
    with the reason as a note."""
    if unexplained <= MAX_UNEXPLAINED:
        return None
    reason = f"the kernel leaves {unexplained:.0%} of the photo unexplained (moving objects?)"
    if method != "auto":
        return Choice("kernel", f"{reason}: deconvolved anyway (--method kernel)")
    fallback: Literal["network", "unchanged"] = "network" if has_network else "unchanged"
    return Choice(fallback, f"{reason}: {fallback}")


def against_network(kernel_db: float, network_db: float) -> Choice | None:
    """Auto's last step on a deconvolved photo: None to keep the deconvolution, which moved the photo to
    ``kernel_db`` dB of PSNR from the input, when the network's output (``network_db``) stays closer to the input
    by more than :data:`MIN_LEAD_DB`; else the network."""
    if network_db > kernel_db + MIN_LEAD_DB:
        return None
    return Choice("network", f"the network changes the photo as much as the deconvolution, to {network_db:.1f} dB "
                             f"from the input against {kernel_db:.1f}: more than a camera shake: network")
