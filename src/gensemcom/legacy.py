"""Migration API for users of the seed repositories (guided-diffusion / SDM / GESCO / Q-GESCO).

``model_and_diffusion_from_flags(flags)`` takes the flag names and defaults of those
repositories' ``script_util.model_and_diffusion_defaults()`` (a dict, or an argv list such as
``["--num_classes", "35", "--class_cond", "True"]``) and returns ``(model, diffusion)`` of this
package, with the reference's behaviour and state-dict layout::

    model, diffusion = model_and_diffusion_from_flags({...})
    load_checkpoint(model, "Cityscapes_ema_0.9999_190000.pt")
    x0 = diffusion.sample(model, y, guidance_scale=2.0, method="ddim")

The trap this module warns about: guided-diffusion's default ``one_hot_label=False`` gives a
2-channel label input (raw id + edge). GESCO's ``image_train.py`` trains with that default
while its sampler passes ``--one_hot_label True``, which is why self-trained GESCO models fail to
load (ispamm/GESCO issue #13).
"""

from __future__ import annotations

import argparse
import warnings
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:  # imported where used, so that the CLIs' --help needs no torch
    from .diffusion.gaussian import DiffusionConfig, GaussianDiffusion
    from .models.semantic_unet import SemanticUNet, SemanticUNetConfig

__all__ = ["LEGACY_DEFAULTS", "LegacyFlagWarning", "boolean", "parse_flags", "config_from_flags",
           "model_and_diffusion_from_flags", "default_channel_mult"]

#: guided-diffusion/GESCO ``model_and_diffusion_defaults()`` (with ``diffusion_defaults()``).
LEGACY_DEFAULTS: dict[str, Any] = dict(
    image_size=64, num_classes=151, num_channels=128, num_res_blocks=2, num_heads=4,
    num_heads_upsample=-1, num_head_channels=-1, attention_resolutions="16,8", channel_mult="",
    dropout=0.0, class_cond=False, use_checkpoint=False, use_scale_shift_norm=True,
    resblock_updown=False, use_fp16=False, use_new_attention_order=False, no_instance=False,
    one_hot_label=False, unet_model="unet",
    learn_sigma=False, diffusion_steps=1000, noise_schedule="linear", timestep_respacing="",
    use_kl=False, predict_xstart=False, rescale_timesteps=False, rescale_learned_sigmas=False,
)


class LegacyFlagWarning(UserWarning):
    """A legacy flag combination that builds something other than what users usually mean."""


_TRUE, _FALSE = ("true", "t", "yes", "y", "1"), ("false", "f", "no", "n", "0")


def boolean(v: Any) -> bool:
    """A guided-diffusion boolean flag value ("True"/"False", "1"/"0", bool) -> bool
    (usable as an argparse ``type``: its name makes argparse say "invalid boolean value")."""
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.strip().lower() in _TRUE + _FALSE:
        return v.strip().lower() in _TRUE
    raise ValueError(f"expected a boolean ('True'/'False'), got {v!r}")


def _to_bool(name: str, v: Any) -> bool:
    try:
        return boolean(v)
    except ValueError as e:
        raise ValueError(f"flag {name}: {e}") from None


def _coerce(name: str, v: Any) -> Any:
    default = LEGACY_DEFAULTS[name]
    if isinstance(default, bool):
        return _to_bool(name, v)
    try:
        if isinstance(default, int):
            return int(v)
        if isinstance(default, float):
            return float(v)
    except (TypeError, ValueError):
        raise ValueError(f"flag {name}: expected a {type(default).__name__}, got {v!r}") from None
    return "" if v is None else str(v)


def parse_flags(flags: Mapping[str, Any] | Sequence[str]) -> tuple[dict[str, Any], set[str]]:
    """Flags (dict or argv list) -> (complete flag dict with defaults, names given explicitly).

    Unknown names are an error (they would be silently ignored by the reference only when the
    script does not define them). Other flags of the seed scripts (``--snr``, ``--s``,
    ``--batch_size`` ...) are not model or diffusion flags: pass them to the sampling CLI.
    """
    if isinstance(flags, Mapping):
        given = dict(flags)
    else:
        argv = list(flags)
        parser = argparse.ArgumentParser(prog="model_and_diffusion_from_flags", add_help=False)
        for k in LEGACY_DEFAULTS:
            parser.add_argument(f"--{k}", default=argparse.SUPPRESS)
        ns, rest = parser.parse_known_args(argv)
        if rest:
            raise ValueError(f"unknown model/diffusion flags: {rest}; known: {sorted(LEGACY_DEFAULTS)}")
        given = vars(ns)
    unknown = sorted(set(given) - set(LEGACY_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown model/diffusion flags: {unknown}; known: {sorted(LEGACY_DEFAULTS)}")
    out = dict(LEGACY_DEFAULTS)
    out.update({k: _coerce(k, v) for k, v in given.items()})
    return out, set(given)


def default_channel_mult(image_size: int) -> tuple[float, ...]:
    """The reference's ``channel_mult`` for ``channel_mult=""``."""
    table = {512: (0.5, 1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}
    if image_size not in table:
        raise ValueError(f"no default channel_mult for image_size {image_size} (the reference "
                         f"knows {sorted(table)}); pass channel_mult, e.g. '1,2,2'")
    return table[image_size]


def config_from_flags(flags: Mapping[str, Any] | Sequence[str], *, reference: str = "gesco",
                      ) -> tuple[SemanticUNetConfig, DiffusionConfig]:
    """Legacy flags -> (network config, diffusion config); see :func:`model_and_diffusion_from_flags`."""
    from .diffusion.gaussian import DiffusionConfig
    from .models.semantic_unet import SemanticUNetConfig

    if reference not in ("gesco", "sdm"):
        raise ValueError(f"reference must be 'gesco' or 'sdm', got {reference!r}")
    f, given = parse_flags(flags)
    small = [f"{k}={f[k]}" for k in ("image_size", "num_classes", "num_channels", "diffusion_steps") if f[k] < 1]
    if small:
        raise ValueError(f"flags {', '.join(small)}: must be at least 1")
    if f["unet_model"] != "unet":
        raise ValueError(f"unet_model={f['unet_model']!r}: only the SDM/GESCO 'unet' exists "
                         "(the reference's other variants live in a module it does not ship)")
    if not f["class_cond"]:
        raise ValueError("class_cond=False: the SDM/GESCO network needs a semantic map (the "
                         "reference crashes building it); pass class_cond=True")
    if f["use_kl"]:
        raise ValueError("use_kl=True (a pure variational-bound loss) is not supported; use the "
                         "default MSE loss, or reference='sdm' for MSE + bound")
    if f["one_hot_label"]:
        label_channels = f["num_classes"] + (0 if f["no_instance"] else 1)
    else:
        label_channels = 2
        how = "was left at its default False" if "one_hot_label" not in given else "is False"
        warnings.warn(
            f"one_hot_label {how}: the network's label input has 2 channels (raw label id + "
            f"instance edge), not {f['num_classes'] + (0 if f['no_instance'] else 1)} one-hot "
            "channels. GESCO's image_train.py trains like this by accident while its sampler "
            "passes --one_hot_label True, so released checkpoints need one_hot_label=True "
            "(ispamm/GESCO issue #13). Pass one_hot_label explicitly.",
            LegacyFlagWarning, stacklevel=3)
    mult = (default_channel_mult(f["image_size"]) if f["channel_mult"] == ""
            else tuple(float(m) if "." in m else int(m) for m in f["channel_mult"].split(",")))
    attn = tuple(int(r) for r in f["attention_resolutions"].split(",")) if f["attention_resolutions"] else ()
    model_cfg = SemanticUNetConfig(
        label_channels=label_channels,
        image_size=f["image_size"],
        model_channels=f["num_channels"],
        channel_mult=mult,
        num_res_blocks=f["num_res_blocks"],
        attention_resolutions=attn,
        num_heads=f["num_heads"],
        num_head_channels=f["num_head_channels"],
        num_heads_upsample=f["num_heads_upsample"],
        attention_order="new" if f["use_new_attention_order"] else "legacy",
        out_channels=6 if f["learn_sigma"] else 3,
        dropout=f["dropout"],
        use_scale_shift_norm=f["use_scale_shift_norm"],
        resblock_updown=f["resblock_updown"],
        layout="gesco" if reference == "gesco" else "sdm",
        gradient_checkpointing=f["use_checkpoint"],
    )
    if f["rescale_learned_sigmas"]:
        loss = "rescaled_hybrid"
    else:
        loss = "mse" if reference == "gesco" else "hybrid"
    diff_cfg = DiffusionConfig(
        steps=f["diffusion_steps"],
        schedule=f["noise_schedule"],
        respacing=f["timestep_respacing"],
        prediction="x0" if f["predict_xstart"] else "epsilon",
        variance="learned_range" if f["learn_sigma"] else "fixed_large",
        loss=loss,
        rescale_timesteps=f["rescale_timesteps"],
    )
    return model_cfg, diff_cfg


def model_and_diffusion_from_flags(flags: Mapping[str, Any] | Sequence[str], *, reference: str = "gesco",
                                   ) -> tuple[SemanticUNet, GaussianDiffusion]:
    """Build ``(model, diffusion)`` exactly as the reference's ``create_model_and_diffusion``.

    Args:
        flags: guided-diffusion/GESCO flag names (dict or argv list; "True"/"False" strings
            accepted), defaults as :data:`LEGACY_DEFAULTS`.
        reference: ``"gesco"`` (default): GESCO's state-dict layout (with its unused encoder
            ``spade_norm``) and its noise-MSE-only loss. ``"sdm"``: SDM's layout (no encoder
            ``spade_norm``) and its MSE + variational-bound loss.

    ``use_fp16`` does not convert weights: pass ``autocast=torch.float16`` to
    ``diffusion.sample`` on a GPU instead (the arithmetic outside the network stays float32).
    """
    from .diffusion.gaussian import GaussianDiffusion
    from .models.semantic_unet import SemanticUNet

    model_cfg, diff_cfg = config_from_flags(flags, reference=reference)
    return SemanticUNet(model_cfg), GaussianDiffusion.from_config(diff_cfg)
