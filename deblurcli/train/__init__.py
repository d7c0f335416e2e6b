"""The GAN training recipe behind ``deblur train``.

``data`` (in-memory photos/pairs, vectorised random crops), ``losses`` (pixel, LPIPS, adversarial,
WGAN-GP), ``diffaug`` (DiffAugment shared by real and fake), ``checkpoint`` (atomic, weights-only
resumable state) and ``loop`` (the :class:`~deblurcli.train.loop.Trainer`). Nothing here is imported by
``deblur`` itself, so inference never pays for it.
"""
