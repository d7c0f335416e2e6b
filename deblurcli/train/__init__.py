"""The GAN training recipe behind ``deblur train``, one concern per module.

``options`` (the run's options and their validation), ``data`` (in-memory photos/pairs, vectorised
random crops), ``losses`` (pixel, LPIPS, adversarial, WGAN-GP, and the name tables ``--loss``/``--gan``
offer), ``recipe`` (the loss terms of one step and the critic ``--gan`` wants), ``diffaug`` (DiffAugment
shared by real and fake), ``schedule`` (warm-up and cosine learning rate), ``validation`` (fixed pairs,
PSNR/SSIM, the best-model rule), ``log`` (log.csv and progress lines), ``checkpoint`` (atomic,
weights-only resumable state), ``stop`` (clean stops on signals), ``distributed`` (torchrun) and
``loop`` (the :class:`~deblurcli.train.loop.Trainer`). Nothing here is imported by ``deblur`` itself,
so inference never pays for it.
"""
