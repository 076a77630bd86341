"""Built-in TorchScript models: the torch twins of builtin_models' ONNX workloads.

Applications run TorchScript in-process today, so the benchmarks and GPU tests
need TorchScript files of the same shapes as the ONNX workloads: a demo MLP, a
ResNet-18-shaped classifier and the 32 MiB 3-D volume model. Seeded weights;
written once into the cache folder beside the ONNX models.
"""

from __future__ import annotations

import os
import pathlib
import tempfile

from trtd.daemon.builtin.onnx_models import default_cache_dir

GENERATOR_VERSION = 1

# name -> the inputs setting a config would give ("NAME:SHAPE[:DTYPE]")
BUILTIN_TORCH_INPUTS: dict[str, list[str]] = {
    "demo": ["x:-1,64:float32"],
    "resnet18": ["x:-1,3,224,224:float32"],
    "volume3d": ["x:-1,1,128,256,256:float32"],
}


def eager_modules():
    """The built-in models as eager torch modules (classes by name), before scripting."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
            self.project = nn.Conv2d(cin, cout, 1, stride) if (stride != 1 or cin != cout) else None
            with torch.no_grad():  # keep activations O(1) through 8 residual blocks
                self.conv2.weight.mul_(0.2)

        def forward(self, x):
            y = self.conv2(torch.relu(self.conv1(x)))
            skip = x if self.project is None else self.project(x)
            return torch.relu(y + skip)

    class ResNet18(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 64, 7, 2, 3)
            layers, cin = [], 64
            for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
                layers += [Block(cin, cout, stride), Block(cout, cout, 1)]
                cin = cout
            self.layers = nn.Sequential(*layers)
            self.head = nn.Linear(512, 5)

        def forward(self, x):
            x = torch.max_pool2d(torch.relu(self.stem(x)), 3, 2, 1)
            x = self.layers(x)
            return self.head(torch.flatten(torch.mean(x, dim=(2, 3), keepdim=True), 1))

    class Mlp(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(64, 32), nn.Linear(32, 10)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x)))

    class Volume(nn.Module):
        def forward(self, x):
            return torch.sigmoid(x * 0.75 + 0.1)

    return {"demo": Mlp, "resnet18": ResNet18, "volume3d": Volume}


def build_torchscript(name: str):
    import torch

    modules = eager_modules()
    if name not in modules:
        raise ValueError(f"unknown built-in TorchScript model {name!r}; known: {', '.join(modules)}")
    torch.manual_seed(0)
    return torch.jit.script(modules[name]().eval())


def builtin_torchscript_path(name: str, cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
    import torch

    folder = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = folder / "models"
    target = folder / f"{name}-torch-v{GENERATOR_VERSION}.pt"
    if target.exists():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    module = build_torchscript(name)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}-", suffix=".pt")
    os.close(fd)
    try:
        torch.jit.save(module, tmp)
        os.replace(tmp, target)  # atomic: concurrent daemons never read half a file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target
