"""Train the two small demonstration models on CPU, deterministically (about a minute).

    python -m trtd.bench.train_models [--out bench/models]

A 4-class shape classifier (float32 [N,1,32,32] -> logits [N,4]) and a 3-D
segmenter (float32 [N,1,32,64,64] -> mask probability, same shape), trained on
trtd.daemon.precision.datasets. Writes TorchScript files and their ONNX export
(through `trtd export`'s code path, including its ONNX Runtime check), plus a
JSON with the seeds, steps, final losses and held-out accuracy / Dice.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def _classifier(torch):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(32, 4))


def _segmenter(torch):
    nn = torch.nn

    class Segmenter(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv3d(1, 8, 3, padding=1), nn.ReLU(),
                nn.Conv3d(8, 8, 3, padding=2, dilation=2), nn.ReLU(),
                nn.Conv3d(8, 8, 3, padding=1), nn.ReLU(),
                nn.Conv3d(8, 1, 1))

        def forward(self, x):
            return torch.sigmoid(self.body(x))

    return Segmenter()


def _fit(torch, model, lr: float, steps: int, batch: int, inputs, targets, loss_fn):
    """Adam on random mini-batches; returns the last loss."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        idx = torch.randint(0, len(inputs), (batch,))
        loss = loss_fn(model(inputs[idx]), targets[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss


def train(out: Path) -> dict:
    import torch

    from trtd.daemon.precision.datasets import shapes, spheres
    from trtd.daemon.precision.export import export_torchscript

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)
    out.mkdir(parents=True, exist_ok=True)
    report = {}

    t = time.time()
    x, y = shapes(4096, seed=1)
    model = _classifier(torch)
    loss = _fit(torch, model, 3e-3, 1500, 64, torch.from_numpy(x), torch.from_numpy(y),
                lambda out, target: torch.nn.functional.cross_entropy(out, target))
    model.eval()
    xv, yv = shapes(512, seed=2)
    with torch.no_grad():
        acc = float((model(torch.from_numpy(xv)).argmax(1).numpy() == yv).mean())
    scripted = torch.jit.script(model)
    torch.jit.save(scripted, str(out / "shapes_classifier.pt"))
    report["shapes_classifier"] = {"train_seed": 1, "steps": 1500, "final_loss": float(loss),
                                   "heldout_accuracy": acc, "seconds": round(time.time() - t, 1)}

    t = time.time()
    x, m = spheres(96, seed=3)
    model = _segmenter(torch)

    def segmentation_loss(p, target):
        # Spheres fill a few percent of a volume: BCE alone learns "all background";
        # the soft Dice term rewards finding them.
        soft_dice = 1 - (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
        return torch.nn.functional.binary_cross_entropy(p, target) + soft_dice

    loss = _fit(torch, model, 1e-2, 150, 4, torch.from_numpy(x), torch.from_numpy(m), segmentation_loss)
    model.eval()
    xv, mv = spheres(8, seed=4)
    with torch.no_grad():
        pred = model(torch.from_numpy(xv)).numpy() > 0.5
    dice = float(2 * (pred & (mv > 0.5)).sum() / (pred.sum() + (mv > 0.5).sum()))
    scripted = torch.jit.script(model)
    torch.jit.save(scripted, str(out / "spheres_segmenter.pt"))
    report["spheres_segmenter"] = {"train_seed": 3, "steps": 150, "final_loss": float(loss),
                                   "heldout_dice": dice, "seconds": round(time.time() - t, 1)}

    for name, spec in (("shapes_classifier", "x:-1,1,32,32"), ("spheres_segmenter", "x:-1,1,32,64,64")):
        result = export_torchscript(out / f"{name}.pt", [spec], out / f"{name}.onnx", dynamic_batch=True)
        report[name]["export"] = result
    (out / "training.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trtd.bench.train_models")
    parser.add_argument("--out", default=str(Path(__file__).parent / "models"))
    args = parser.parse_args(argv)
    print(json.dumps(train(Path(args.out)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
