"""Diff-JSCC as a communication system: a JSCC encoder's latent crosses the channel and
conditions a diffusion decoder.

After ``wangxuuu/Diff_JSCC`` (code only; the networks are in :mod:`gensemcom.models.diffjscc`)::

    images (B, 3, S, S) in [-1, 1] --encoder--> z (B, k) --normalise per image (mean |s|^2 = 1
        per complex symbol)--> ceil(k/2) complex channel uses --AWGN / Rayleigh (one gain per
        image, perfect CSI, MMSE), Es/N0 = snr_db--> z_hat (B, k)
    receiver: improved-diffusion U-Net, emb = time + label_emb(class) + latent_emb(z_hat [, SNR]),
        DDIM (``SystemOptions.steps``, 20 by default) from Gaussian noise -> images

Cost: ``channel_uses = ceil(k/2)`` per image (k = 512 at 32x32: 256 uses, 0.25 per pixel, the
bandwidth of Deep JSCC at c/n = 1/12); with ``class_label="sent"`` the class label also costs
``ceil(log2 K)`` bits per image (``SystemOutput.bits``), assumed delivered error-free on a control
channel. The class label of a batch is read from its label maps, which the classification sets
(:mod:`gensemcom.data.cifar10`, :mod:`gensemcom.data.fashion_mnist`) fill with the class id; a
model that uses the class refuses batches whose maps are not one class per image.

Two systems are registered: ``diffjscc[:FOLDER]`` decodes from Gaussian noise (the communication
result) and ``diffjscc-oracle[:FOLDER]`` from the DDIM inversion of the *transmitted* image, which
the receiver does not have: Diff_JSCC's "start from X_T" row, an **oracle upper bound**, never a
communication result (its ``info["oracle"]`` is True).

:func:`reference_channel` is the published code's unused channel, as written (for the record).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..channels.analog import check_snr_db
from ..models.diffjscc import DiffJSCC
from .base import PHYSICAL_CHANNELS, Batch, System, SystemOutput
from .registry import SystemOptions, register_system

__all__ = ["reference_channel", "DiffJSCCSystem", "BUNDLED_DIFFJSCC", "class_labels_from_maps"]

#: package-relative folder of the bundled Fashion-MNIST Diff-JSCC model (when installed)
BUNDLED_DIFFJSCC = "assets/diffjscc_fashion_mnist"


def class_labels_from_maps(labels: torch.Tensor) -> torch.Tensor | None:
    """(B, H, W) label maps -> (B,) class ids when every map holds one value, else None."""
    flat = labels.reshape(labels.shape[0], -1)
    if flat.shape[1] == 0 or not (flat == flat[:, :1]).all():
        return None
    return flat[:, 0].clone()


class DiffJSCCSystem(System):
    """Diff-JSCC around a trained :class:`~gensemcom.models.diffjscc.DiffJSCC`.

    Args:
        model: the model (put in eval mode).
        source: where it was loaded from (recorded in :meth:`config`).
        steps: DDIM steps of the decoder (None: the model's ``sample_steps``).
        oracle: decode from the DDIM inversion of the transmitted image (an upper bound, not a
            communication result).
    """

    stochastic = True
    channels = PHYSICAL_CHANNELS

    def __init__(self, model: DiffJSCC, source: str | None = None, steps: int | None = None,
                 oracle: bool = False) -> None:
        self.model = model.eval()
        self.source = source
        self.steps = steps
        self.oracle = oracle
        self.name = "diffjscc-oracle" if oracle else "diffjscc"
        self.stochastic = not oracle

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, device: str | torch.device = "cpu",
                        **kw: Any) -> "DiffJSCCSystem":
        return cls(DiffJSCC.from_pretrained(folder, device=device), source=str(folder), **kw)

    @classmethod
    def bundled(cls, device: str | torch.device = "cpu", **kw: Any) -> "DiffJSCCSystem":
        """The model in ``gensemcom/assets/diffjscc_fashion_mnist`` when it is installed."""
        from importlib.resources import files

        path = Path(str(files("gensemcom").joinpath(BUNDLED_DIFFJSCC)))
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"no bundled Diff-JSCC model is installed (expected {path}); train one with "
                "scripts/train_diffjscc.sh and pass its folder: diffjscc:runs/diffjscc_fmnist/model")
        system = cls.from_pretrained(path, device=device, **kw)
        system.source = "bundled"
        return system

    def config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"name": self.name, "model": self.model.config.to_dict(),
                               "steps": self.steps or self.model.config.sample_steps, "oracle": self.oracle}
        if self.source is not None:
            cfg["source"] = self.source
        saved = getattr(self.model, "saved_config", None)
        if isinstance(saved, dict) and "trained_steps" in saved:
            cfg["trained_steps"] = saved["trained_steps"]
        return cfg

    def compatible(self, batch: Batch) -> str | None:
        s = self.model.config.image_size
        if tuple(batch.images.shape[2:]) != (s, s):
            return f"the model is built for {s}x{s} images, the data are {tuple(batch.images.shape[2:])}"
        if self.model.config.class_label == "sent":
            c = class_labels_from_maps(batch.labels)
            if c is None:
                return "the model is conditioned on a class label and the data are not one class per image"
            if (c < 0).any() or (c >= self.model.config.unet.num_classes).any():
                return f"class ids outside the model's {self.model.config.unet.num_classes} classes"
        return None

    def run(self, batch: Batch, channel: str, snr_db: float,
            generator: torch.Generator | None = None) -> SystemOutput:
        """Encode, send the latent over ``channel`` at ``snr_db`` (Es/N0 per complex use), decode.

        Every draw (channel noise and gains, the decoder's x_T) comes from ``generator``, on its
        device (the CPU for a default generator)."""
        self.check_channel(channel)
        snr_db = check_snr_db(snr_db)
        reason = self.compatible(batch)
        if reason is not None:
            raise ValueError(f"{self.name} cannot send this batch: {reason}")
        cfg = self.model.config
        device = next(self.model.parameters()).device
        labels = class_labels_from_maps(batch.labels) if cfg.class_label == "sent" else None
        labels = None if labels is None else labels.to(device)
        images = batch.images.to(device, torch.float32)
        h, w = images.shape[2:]
        with torch.inference_mode():
            z_hat = self.model.send(self.model.encode(images), channel, snr_db, generator=generator)
            if self.oracle:
                out = self.model.oracle_decode(images, z_hat, labels, snr_db, steps=self.steps)
            else:
                where = generator.device if generator is not None else torch.device("cpu")
                x_T = torch.randn(images.shape, generator=generator, device=where).to(device)
                out = self.model.decode(z_hat, labels, snr_db, noise=x_T, steps=self.steps)
        uses = float(cfg.channel_uses)
        bits = (torch.full((batch.size,), float(cfg.label_bits), dtype=torch.float64)
                if cfg.class_label == "sent" else None)
        return SystemOutput(
            images=out.to(batch.images.device), labels=None,
            channel_uses=torch.full((batch.size,), uses, dtype=torch.float64), bits=bits,
            info={"bandwidth_ratio": uses / (3 * h * w), "channel_uses_per_pixel": uses / (h * w),
                  "oracle": self.oracle, "class_label": cfg.class_label})


def _build(arg: str | None, o: SystemOptions, oracle: bool) -> System:
    kw = {"steps": o.steps, "oracle": oracle}
    if arg:
        return DiffJSCCSystem.from_pretrained(arg, device=o.device, **kw)
    return DiffJSCCSystem.bundled(device=o.device, **kw)


_SENDS = "the JSCC encoder's latent, analog (power-normalised), + the class label as bits"
_COST = "ceil(k/2) complex uses per image (k = 512 at 32x32: 0.25 per pixel) + ceil(log2 K) label bits"


@register_system("diffjscc", usage="diffjscc[:FOLDER]", sends=_SENDS,
                 receiver="latent- and class-conditioned diffusion U-Net, DDIM from Gaussian noise",
                 description="Diff-JSCC (wangxuuu/Diff_JSCC): a JSCC latent conditions a diffusion decoder",
                 cost=_COST)
def _diffjscc(arg: str | None, o: SystemOptions) -> System:
    return _build(arg, o, oracle=False)


@register_system("diffjscc-oracle", usage="diffjscc-oracle[:FOLDER]", sends=_SENDS,
                 receiver="ORACLE: DDIM inversion of the transmitted image, then DDIM decoding",
                 description="Diff-JSCC started from the inverted true image: an upper bound, not a result",
                 cost=_COST + " (the inverted image itself is not counted: oracle)")
def _diffjscc_oracle(arg: str | None, o: SystemOptions) -> System:
    return _build(arg, o, oracle=True)


def reference_channel(z: torch.Tensor, kind: str, snr_db: float, *, noise: torch.Tensor | None = None,
                      gain_draws: torch.Tensor | None = None, generator: torch.Generator | None = None,
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Diff_JSCC's ``models/noise_channel.Channel``, as written (the repository never calls it).

    Kept to document and test what the published code would have done; the system itself uses
    :mod:`gensemcom.channels` (complex pairing, Es/N0 per complex channel use).

    - ``"awgn"``: ``z_in = sqrt(k) z / ||z||`` per sample (mean power 1 per *real* value), then
      ``z_in + sigma n`` with ``sigma = sqrt(10^(-snr/10))`` and ``n ~ N(0, 1)`` per real value:
      the SNR is per real dimension, 3 dB off the complex convention.
    - ``"fading-real"``: ``z_in = sqrt(k/2) z / ||z||`` (power 1/2 per real value), one magnitude
      ``|h| = sqrt(a^2 + b^2)``, ``a, b ~ N(0, 1/2)``, per sample, noise ``sigma / sqrt(2) n``.
    - ``"fading"``: the complex version cannot run as written (it pairs ``z[:, :k]`` with the empty
      ``z[:, k:]``); a ValueError says so.

    Args:
        z: (B, k) latent.
        snr_db: the ``channel_snr`` argument, in dB.
        noise: (B, k) the N(0, 1) draws for the additive noise (drawn from ``generator`` if None).
        gain_draws: (B, 2) the raw N(0, 1) draws ``(a*sqrt2, b*sqrt2)`` of ``fading-real``.

    Returns:
        ``(out (B, k), average power (0-d), h)``: ``h`` is all ones (B, k) for ``awgn`` and the
        magnitudes (B, 1) for ``fading-real``.
    """
    if z.ndim != 2:
        raise ValueError(f"z must be (B, k), got {tuple(z.shape)}")
    std = math.sqrt(10 ** (-float(snr_db) / 10))
    if kind == "fading":
        raise ValueError("Diff_JSCC's 'fading' channel cannot run as written: it pairs z[:, :k] with the "
                         "empty z[:, k:] (a size mismatch); use 'fading-real' or the library's Rayleigh channel")
    if kind not in ("awgn", "fading-real"):
        raise ValueError(f"unknown reference channel {kind!r}; expected 'awgn', 'fading-real' or 'fading'")
    b, k = z.shape
    if kind == "fading-real":
        if gain_draws is None:
            gain_draws = torch.cat([torch.randn(b, 1, generator=generator), torch.randn(b, 1, generator=generator)],
                                   dim=1)
        n1 = gain_draws[:, 0:1] * (1 / math.sqrt(2))
        n2 = gain_draws[:, 1:2] * (1 / math.sqrt(2))
        h = torch.sqrt(n1.square() + n2.square())
    if noise is None:
        noise = torch.randn(b, k, generator=generator)
    if noise.shape != z.shape:
        raise ValueError(f"noise must have the shape of z {tuple(z.shape)}, got {tuple(noise.shape)}")
    if kind == "awgn":
        z_in = math.sqrt(k) * F.normalize(z, dim=1)
        out = z_in + noise * std
        h = torch.ones_like(z_in)
    else:
        z_in = math.sqrt(k // 2) * F.normalize(z, dim=1)
        out = h * z_in + noise * std / math.sqrt(2)
    return out, z_in.square().mean(), h


# ------------------------------------------------------------------------------------------------
# Measuring and training a model (the recipe: scripts/train_diffjscc.sh)
# ------------------------------------------------------------------------------------------------

def evaluate_diffjscc(model: DiffJSCC, dataset: Any, snrs_db: list[float], *, channel: str = "awgn",
                      num_images: int = 64, batch_size: int = 32, seed: int = 0, steps: int | None = None,
                      oracle: bool = False) -> list[dict[str, Any]]:
    """PSNR and SSIM (on [0, 1] images) of ``num_images`` test images per SNR, decoding from
    Gaussian noise (``oracle=True``: from the inversion of the true image; an upper bound).

    Returns one record per SNR: ``{"snr_db", "channel", "psnr", "ssim", "psnr_std", "ssim_std",
    "n", "oracle", "channel_uses_per_pixel"}``. Each SNR uses a generator seeded with ``seed``.
    """
    from ..metrics.fidelity import psnr, ssim

    system = DiffJSCCSystem(model, steps=steps, oracle=oracle)
    n = min(num_images, len(dataset))
    items = [dataset[i] for i in range(n)]
    records = []
    for snr in snrs_db:
        gen = torch.Generator().manual_seed(seed)
        p_all, s_all = [], []
        for start in range(0, n, batch_size):
            chunk = items[start:start + batch_size]
            imgs = torch.stack([it["image"] for it in chunk])
            labels = torch.stack([it["label"] for it in chunk])
            batch = Batch(imgs, labels, None, [it["path"] for it in chunk], model.config.unet.num_classes or 1)
            out = system.run(batch, channel, snr, gen)
            a, b = (out.images.clamp(-1, 1) + 1) / 2, (imgs + 1) / 2
            p_all.append(psnr(a, b))
            s_all.append(ssim(a, b))
        p, s = torch.cat(p_all), torch.cat(s_all)
        records.append({"snr_db": snr, "channel": channel, "psnr": round(p.mean().item(), 3),
                        "ssim": round(s.mean().item(), 4), "psnr_std": round(p.std().item(), 3),
                        "ssim_std": round(s.std().item(), 4), "n": n, "oracle": oracle,
                        "channel_uses_per_pixel": out.info["channel_uses_per_pixel"]})
    return records


def diffjscc_trainer(config: Any, dataset: Any, out_dir: str | os.PathLike, *, train: dict[str, Any] | None = None,
                     device: str | torch.device | None = None):
    """The platform's :class:`gensemcom.train.Trainer` set up for a Diff-JSCC model (EMA of the
    U-Net and the encoder, AMP, accumulation, DDP under ``torchrun``, atomic checkpoints, exact
    resume); load its ``out_dir/model`` with :meth:`DiffJSCC.from_trainer_output`.

    Args:
        config: a :class:`~gensemcom.models.diffjscc.DiffJSCCConfig`, or the path of a Diff_JSCC
            yaml file (its model, diffusion and training keys are used; ``compat="none"``, the
            real channel, unless ``train`` says otherwise: see below).
        dataset: items with ``image`` and, for class-conditioned models, ``class``.
        train: :class:`gensemcom.train.TrainConfig` fields overriding the yaml's training keys
            (``steps``, ``batch_size``, ``lr``, ...). For a yaml path, the keys ``compat``,
            ``snr_input``, ``train_channel``, ``train_snr_db``, ``class_label`` in ``train`` go
            to the model config instead.
    """
    from ..models.diffjscc import (DiffJSCCConfig, diffjscc_condition, read_yaml_config,
                                   train_settings_from_yaml)
    from ..train import TrainConfig, Trainer

    settings: dict[str, Any] = {}
    train = dict(train or {})
    if not isinstance(config, DiffJSCCConfig):
        cfg = read_yaml_config(config)
        model_keys = {"compat", "snr_input", "train_channel", "train_snr_db", "class_label", "sample_steps",
                      "sample_process"}
        overrides = {k: train.pop(k) for k in list(train) if k in model_keys}
        overrides.setdefault("compat", "none")
        config = DiffJSCCConfig.from_yaml(cfg, **overrides)
        settings = train_settings_from_yaml(cfg)
    settings.update(train)
    tc = TrainConfig(out_dir=str(out_dir), **settings)
    return Trainer(config.unet, config.diffusion, dataset, max(config.unet.num_classes, 1), tc, device=device,
                   condition=diffjscc_condition(config))
