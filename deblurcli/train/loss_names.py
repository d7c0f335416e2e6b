"""The names ``deblur train`` offers for its losses, without torch.

``deblur train --help`` lists them, and importing :mod:`deblurcli.train.losses` (torch) for that cost two
seconds. :mod:`deblurcli.train.losses` maps each name to its functions; ``tests/test_train_losses.py`` keeps
the two in step, so a new loss is its functions, one entry in its table there and its name here.
"""

from __future__ import annotations

#: ``--loss``: the reconstruction term.
PIXEL_LOSS_NAMES: tuple[str, ...] = ("charbonnier", "l1")
#: ``--gan``: the adversarial loss.
GAN_LOSS_NAMES: tuple[str, ...] = ("wgan-gp", "lsgan", "hinge")
#: ``--lpips-net``: the LPIPS backbone (torchvision ImageNet weights).
LPIPS_NETS: tuple[str, ...] = ("alex", "vgg")
