"""NR-FD (Diff-GO^n's noise-restricted forward diffusion) against standard Gaussian noise.

The same small semantic U-Net is trained from the same initialisation, on the same synthetic
scenes, batches and timesteps, with the forward noise drawn either fresh from N(0, I) or from a
shared noise bank of N entries (per-sample indices, the default NR-FD of
:func:`gensemcom.systems.diffgo.nrfd_losses`). Every ``--eval-every`` steps it records the
validation loss on held-out scenes with fixed timesteps and **fresh Gaussian noise** (the true
denoising objective the sampler needs; the same draws for every run) and with **bank noise**
(what NR-FD fits), and when the :class:`gensemcom.systems.diffgo.EarlyStopping` rule, applied to
the Gaussian validation loss, would have stopped.

    .venv/bin/python scripts/nrfd_diffgo.py --steps 300 --banks 100 1000 10000 --out runs/nrfd

Writes ``curves.json`` and ``curves.png``; prints a table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--banks", type=int, nargs="*", default=[100, 1000, 10000], help="bank sizes N (0 = none)")
    p.add_argument("--train-images", type=int, default=256)
    p.add_argument("--val-images", type=int, default=32)
    p.add_argument("--size", default="32x64")
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/nrfd")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    h, w = (int(v) for v in a.size.split("x"))

    from gensemcom.data.synthetic import SyntheticScenes
    from gensemcom.diffusion import DiffusionConfig, GaussianDiffusion
    from gensemcom.diffusion.noise_bank import NoiseBank
    from gensemcom.models import SemanticUNet
    from gensemcom.models.semantic_unet import SemanticUNetConfig
    from gensemcom.systems.diffgo import EarlyStopping, diffgo_map

    nc = 12
    train = SyntheticScenes(a.train_images, h, w, seed=a.seed, num_classes=nc)
    val = SyntheticScenes(a.val_images, h, w, seed=a.seed + 1, num_classes=nc)

    def load(ds, idx):
        items = [ds[int(i)] for i in idx]
        x = torch.stack([it["image"] for it in items])
        y = diffgo_map(torch.stack([it["label"] for it in items]), nc, torch.stack([it["instance"] for it in items]),
                       x, edge_kind=None)
        return x, y

    cfg = SemanticUNetConfig(label_channels=nc + 1, image_size=h, model_channels=32, channel_mult=(1, 2, 2),
                             num_res_blocks=1, attention_resolutions=(4,), num_head_channels=32, layout="sdm",
                             spade_hidden=32)
    diffusion = GaussianDiffusion.from_config(DiffusionConfig(loss="mse"))
    xv, yv = load(val, range(a.val_images))
    gv = torch.Generator().manual_seed(a.seed + 7)
    tv = torch.randint(0, diffusion.num_timesteps, (a.val_images,), generator=gv)
    noise_v = torch.randn(xv.shape, generator=gv)

    def val_loss(model, noise):
        with torch.no_grad():
            return float(diffusion.training_losses(model, xv, tv, yv, noise=noise).mean())

    runs = [0] + [n for n in a.banks if n > 0]
    results = {"settings": vars(a), "model": cfg.to_dict(), "runs": {}}
    for n in runs:
        name = "gaussian" if n == 0 else f"bank{n}"
        torch.manual_seed(a.seed)
        model = SemanticUNet(cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=a.lr)
        g = torch.Generator().manual_seed(a.seed + 1)  # batches and timesteps: identical across runs
        gn = torch.Generator().manual_seed(a.seed + 2)  # the forward noise (or the bank indices)
        bank = NoiseBank(a.seed + 3, n, (3, h, w)) if n else None
        # the validation scenes with bank noise (fixed indices): what NR-FD fits
        bank_v = None if bank is None else bank.batch(
            torch.randint(0, n, (a.val_images,), generator=torch.Generator().manual_seed(a.seed + 9)))
        stopper = EarlyStopping("min", window=3, min_delta=0.01, patience=3)
        curve = {"step": [], "train_loss": [], "val_gaussian": [], "val_bank": [], "stop_step": None}
        running, t0 = [], time.perf_counter()
        for step in range(1, a.steps + 1):
            idx = torch.randint(0, len(train), (a.batch,), generator=g)
            x, y = load(train, idx)
            t = torch.randint(0, diffusion.num_timesteps, (a.batch,), generator=g)
            if bank is None:
                noise = torch.randn(x.shape, generator=gn)
            else:
                noise = bank.batch(torch.randint(0, n, (a.batch,), generator=gn))
            model.train()
            loss = diffusion.training_losses(model, x, t, y, noise=noise).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            running.append(loss.item())
            if step % a.eval_every == 0 or step == a.steps:
                model.eval()
                vg = val_loss(model, noise_v)
                vb = val_loss(model, bank_v) if bank_v is not None else vg
                curve["step"].append(step)
                curve["train_loss"].append(sum(running) / len(running))
                curve["val_gaussian"].append(vg)
                curve["val_bank"].append(vb)
                running = []
                if stopper.update(vg) and curve["stop_step"] is None:
                    curve["stop_step"] = step
                print(f"{name} step {step}: train {curve['train_loss'][-1]:.4f} val(gauss) {vg:.4f} "
                      f"val(bank) {vb:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        curve["seconds"] = time.perf_counter() - t0
        results["runs"][name] = curve

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "curves.json").write_text(json.dumps(results, indent=1) + "\n")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(1, 2, figsize=(10, 4))
        for name, c in results["runs"].items():
            ax[0].plot(c["step"], c["val_gaussian"], label=name)
            ax[1].plot(c["step"], c["train_loss"], label=name)
        ax[0].set_title("validation loss, fresh Gaussian noise")
        ax[1].set_title("training loss (mean since last check)")
        for x in ax:
            x.set_xlabel("training step")
            x.legend()
        fig.tight_layout()
        fig.savefig(out / "curves.png", dpi=100)
    except ImportError:
        pass
    print("\n| run | final val loss (Gaussian) | final val loss (bank) | best val (Gaussian) | early stop at |")
    print("|---|---|---|---|---|")
    for name, c in results["runs"].items():
        print(f"| {name} | {c['val_gaussian'][-1]:.4f} | {c['val_bank'][-1]:.4f} | {min(c['val_gaussian']):.4f} | "
              f"{c['stop_step'] or '-'} |")


if __name__ == "__main__":
    main()
