"""The ResNet-18 of resnet18_own_loop.py with the IB layer, as a LightningModule (``pip install lightning``).

    python examples/lightning_module.py                      # 7,001 training digits, 3 epochs
    python examples/lightning_module.py --train 500 --epochs 1

The criterion is a submodule: Lightning moves γ's controller to the device with the model, saves its state in
every checkpoint, and switches it to eval mode for validation, where it stops stepping. Nothing else is
Lightning-specific.
"""
import argparse

import lightning as L
import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lpc
from lpc.config import DataConfig
from lpc.data import load_data


def digits_model() -> nn.Module:
    """ResNet-18 for 1×28×28 digits (as in resnet18_own_loop.py), with the IB head in place of model.fc."""
    model = torchvision.models.resnet18(num_classes=10)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=3, stride=2, padding=1, bias=False)
    return lpc.attach(model)


class IBClassifier(L.LightningModule):
    def __init__(self, total_steps: int, lr: float = 1e-3):
        super().__init__()
        self.model = digits_model()  # a torchvision ResNet-18 with lpc.attach's IB head in model.fc
        self.criterion = lpc.IBLoss(gamma=lpc.AutoGamma(total_steps=total_steps))
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.model(x)
        loss = self.criterion(logits, lpc.latents(self.model), y)  # also steps γ's controller
        self.log_dict({"loss": loss, "gamma": self.criterion.gamma}, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.model(x)
        self.log_dict({"val_loss": self.criterion(logits, lpc.latents(self.model), y),
                       "val_accuracy": (logits.argmax(1) == y).float().mean()}, prog_bar=True)

    def configure_optimizers(self):
        # the classifier behind the IB layer: a scaled lr and weight decay 0.1 (docs/gamma.md)
        return torch.optim.AdamW(lpc.param_groups(self.model, self.lr))

def main(argv=None) -> tuple[IBClassifier, dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=None, help="training images (default: all 7,001)")
    parser.add_argument("--test", type=int, default=None, help="test images (default: all 2,000)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    L.seed_everything(args.seed, verbose=False)

    data = load_data(DataConfig(name="mnist"))
    train = TensorDataset(data.normalize(data.x_train[:args.train]), data.y_train[:args.train])
    test = TensorDataset(data.normalize(data.x_test[:args.test]), data.y_test[:args.test])
    train_loader = DataLoader(train, batch_size=args.batch_size, shuffle=True)
    test_loader = DataLoader(test, batch_size=500)

    module = IBClassifier(total_steps=args.epochs * len(train_loader), lr=args.lr)
    trainer = L.Trainer(max_epochs=args.epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, train_loader, test_loader)
    results = {k: float(v) for k, v in trainer.callback_metrics.items()}
    print(f"after {args.epochs} epochs: gamma {module.criterion.gamma:.4g}  "
          f"test accuracy {results['val_accuracy']:.4f}  test loss {results['val_loss']:.4f}")
    return module, results


if __name__ == "__main__":
    main()
