"""A torchvision ResNet-18 with the IB layer, in a plain PyTorch loop, on the digits embedded in lpc.

    python examples/resnet18_own_loop.py                     # 7,001 training digits, 3 epochs
    python examples/resnet18_own_loop.py --train 500 --epochs 1

Three lines make it an IB model: ``lpc.attach`` puts the IB head where ``model.fc`` was (``model(x)`` still
returns logits), ``lpc.latents`` gives its latents z, and ``lpc.IBLoss`` adds γ‖z‖² with γ steered per step by
``lpc.AutoGamma``. The digits are 1-channel 28×28 images, so the first convolution takes one channel (and a
3×3 kernel: 7×7 would cover a quarter of a digit).
"""
import argparse

import torch
import torchvision
from torch import nn

import lpc
from lpc.config import DataConfig
from lpc.data import load_data


def digits_model() -> nn.Module:
    """ResNet-18 for 1×28×28 digits: a 3×3 stem on one channel; with its max-pool, the first stage sees 7×7."""
    model = torchvision.models.resnet18(num_classes=10)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=3, stride=2, padding=1, bias=False)
    return lpc.attach(model)  # model.fc is now the IB head: 512 -> 8 -> 10


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 500) -> float:
    model.eval()
    right = sum((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item() for i in range(0, len(x), batch))
    return right / len(x)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=None, help="training images (default: all 7,001)")
    parser.add_argument("--test", type=int, default=None, help="test images (default: all 2,000)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    data = load_data(DataConfig(name="mnist"))  # uint8 (N, 1, 28, 28) and the training set's mean and std
    x_train, y_train = data.normalize(data.x_train[:args.train]).to(device), data.y_train[:args.train].to(device)
    x_test, y_test = data.normalize(data.x_test[:args.test]).to(device), data.y_test[:args.test].to(device)
    x_val, y_val = data.normalize(data.x_val[:args.test]).to(device), data.y_val[:args.test].to(device)

    model = digits_model().to(device)
    steps_per_epoch = -(-len(x_train) // args.batch_size)
    criterion = lpc.IBLoss(gamma=lpc.AutoGamma(total_steps=args.epochs * steps_per_epoch)).to(device)
    # the classifier behind the IB layer: a scaled lr and weight decay 0.1 (docs/gamma.md)
    optimizer = torch.optim.AdamW(lpc.param_groups(model, args.lr))

    for epoch in range(1, args.epochs + 1):
        model.train()
        order, total = torch.randperm(len(x_train), device=device), 0.0
        for start in range(0, len(x_train), args.batch_size):
            idx = order[start:start + args.batch_size]
            logits = model(x_train[idx])
            loss = criterion(logits, lpc.latents(model), y_train[idx])  # steps γ's controller too
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
        val = accuracy(model, x_val, y_val)
        # the guard: a significant fall of validation accuracy caps γ a decade lower (docs/gamma.md)
        if criterion.controller.observe(val, len(y_val)):
            print(f"validation accuracy fell: gamma capped at {criterion.gamma:.4g}")
        print(f"epoch {epoch}: loss {total / steps_per_epoch:.4f}  gamma {criterion.gamma:.4g}  "
              f"train accuracy {accuracy(model, x_train, y_train):.4f}  val accuracy {val:.4f}  "
              f"test accuracy {accuracy(model, x_test, y_test):.4f}")
    z = lpc.latents(model)  # the last test batch's latents
    print(f"latents: {tuple(z.shape)}, mean norm {z.norm(dim=1).mean().item():.4g}")


if __name__ == "__main__":
    main()
