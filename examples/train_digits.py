"""Classify scikit-learn's bundled 8x8 handwritten digits (1797 images, nothing to download).

    python examples/train_digits.py                        # MLP, 97-98% test accuracy in seconds on a CPU
    python examples/train_digits.py --model cnn            # a small convolutional net
    python examples/train_digits.py --amp                  # mixed precision (float16 on CUDA, bfloat16 on CPU)
    python examples/train_digits.py --checkpoint-every 5   # training checkpoints in --out
    python examples/train_digits.py --resume runs/digits/checkpoint_epoch005.safetensors

Needs the examples extra: pip install "gradtensor[examples]" (scikit-learn, tqdm).
The train/test split is fixed, and the data order and dropout masks are seeded per epoch, so a run
resumed from a checkpoint ends with exactly the weights of an uninterrupted run. Prints one line per epoch, then
`test accuracy: 0.9xxx`, and saves the final weights to <out>/model_<model>.safetensors.
"""
import argparse
import contextlib
import os

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from tqdm import tqdm

import gradtensor as gt
import gradtensor.nn.functional as F
from gradtensor import nn

SPLIT_SEED = 0  # the train/test split never changes, whatever --seed is
TEST_FRACTION = 0.2
CLASSES = 10
DEFAULT_EPOCHS = 30
EVAL_BATCH_SIZE = 512


def load_splits():
    """(x_train, y_train, x_test, y_test): images (N, 1, 8, 8) float32 in [0, 1], int64 labels."""
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]  # pixel values are 0..16
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=labels
    )
    return x_train, y_train, x_test, y_test


def build_model(kind):
    if kind == "mlp":
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(64, 256), nn.ReLU(), nn.Dropout(0.3),
            nn.Linear(256, 128), nn.ReLU(), nn.Dropout(0.3),
            nn.Linear(128, CLASSES),
        )
    # Two 3x3 convolutions with 2x2 pooling take 8x8 to 2x2; kept narrow so it trains fast on a CPU.
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 2 * 2, 64), nn.ReLU(),
        nn.Linear(64, CLASSES),
    )


def amp_dtype(device_type):
    """float16 on CUDA; on the CPU bfloat16 where ml_dtypes provides it (gt.bfloat16 is None otherwise)."""
    if device_type == "cuda":
        return gt.float16
    return gt.bfloat16 or gt.float16


def default_device():
    return "cuda" if gt.cuda.is_available() else "cpu"


class Trainer:
    """Model, optimizer, schedule and loss scaler of one run, with checkpoints of all four."""

    def __init__(self, args):
        self.args = args
        self.device_type = "cuda" if args.device.startswith("cuda") else "cpu"
        self.dtype = amp_dtype(self.device_type) if args.amp else None
        gt.manual_seed(args.seed)
        self.model = build_model(args.model).to(args.device)
        self.optimizer = gt.optim.Adam(self.model.parameters(), lr=args.lr)
        self.scheduler = gt.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=args.epochs)
        # bfloat16 has float32's exponent range, so only float16 gradients need loss scaling.
        self.scaler = gt.amp.GradScaler(device=self.device_type, enabled=self.dtype == gt.float16)
        self.epoch = 0  # epochs completed

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return gt.amp.autocast(device_type=self.device_type, dtype=self.dtype)

    def train_epoch(self, x_train, y_train, progress):
        """One pass in a seeded random order; returns (mean loss, training accuracy)."""
        args = self.args
        self.model.train()
        # Seeding every epoch from (seed, epoch) makes its data order and dropout masks independent of
        # whether the run started at epoch 0 or was resumed from a checkpoint.
        epoch_seed = int(np.random.SeedSequence([args.seed, self.epoch]).generate_state(1)[0])
        gt.manual_seed(epoch_seed)
        order = np.random.default_rng(epoch_seed).permutation(len(x_train))
        batches = range(0, len(order), args.batch_size)
        # Sums stay on the device (tensors after the first batch) and are read back only for display.
        loss_sum = correct = 0.0
        seen = 0
        # disable=None: a bar on terminals only, not in logs and pipes.
        with tqdm(total=len(batches), desc=f"epoch {self.epoch + 1}/{args.epochs}", leave=False,
                  disable=None if progress else True) as bar:
            for step, start in enumerate(batches, 1):
                index = order[start:start + args.batch_size]
                x = gt.tensor(x_train[index], device=args.device)
                y = gt.tensor(y_train[index], device=args.device)
                with self.autocast():
                    logits = self.model(x)
                    loss = F.cross_entropy(logits, y)
                self.optimizer.zero_grad()
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
                loss_sum = loss_sum + loss.detach() * len(index)
                correct = correct + (logits.argmax(axis=1) == y).sum()
                seen += len(index)
                if progress and (step % 10 == 0 or step == len(batches)):
                    bar.set_postfix(loss=f"{loss_sum.item() / seen:.4f}", acc=f"{correct.item() / seen:.4f}",
                                    refresh=False)
                bar.update()
        self.scheduler.step()
        self.epoch += 1
        return loss_sum.item() / seen, correct.item() / seen

    def evaluate(self, x_eval, y_eval):
        """Accuracy on (x_eval, y_eval), in eval mode (no dropout)."""
        self.model.eval()
        correct = 0
        with gt.no_grad(), self.autocast():
            for start in range(0, len(x_eval), EVAL_BATCH_SIZE):
                x = gt.tensor(x_eval[start:start + EVAL_BATCH_SIZE], device=self.args.device)
                y = gt.tensor(y_eval[start:start + EVAL_BATCH_SIZE], device=self.args.device)
                correct += int((self.model(x).argmax(axis=1) == y).sum().item())
        return correct / len(x_eval)

    def checkpoint(self):
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "config": {"model": self.args.model, "amp": bool(self.args.amp), "epochs": self.args.epochs},
        }

    def load_checkpoint(self, state):
        """Continue from a checkpoint() dict (as gt.load returns it)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch = state["epoch"]


def read_checkpoint(args):
    """The checkpoint of --resume; fills in --epochs from it and checks the run matches it."""
    state = gt.load(args.resume, map_location=args.device)
    config = state["config"]
    if args.epochs is None:
        args.epochs = config["epochs"]
    expected = {"model": args.model, "amp": bool(args.amp), "epochs": args.epochs}
    if config != expected:
        raise SystemExit(
            f"--resume {args.resume}: the checkpoint was written with {config}, this run has {expected}; "
            "pass the same --model and --amp (and --epochs, which sets the learning-rate schedule)"
        )
    return state


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("mlp", "cnn"), default="mlp", help="network to train (default: mlp)")
    parser.add_argument("--device", default=default_device(),
                        help='"cpu", "cuda" or "cuda:N" (default: cuda when available, else cpu)')
    parser.add_argument("--epochs", type=int,
                        help=f"total number of epochs (default: {DEFAULT_EPOCHS}, or the resumed run's)")
    parser.add_argument("--batch-size", type=int, default=32, help="minibatch size (default: 32)")
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam's initial learning rate, cosine-annealed to 0")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights, the data order and dropout")
    parser.add_argument("--amp", action="store_true",
                        help="mixed precision: float16 with loss scaling on CUDA, bfloat16 on the CPU "
                             "(float16 with loss scaling when ml_dtypes is not installed)")
    parser.add_argument("--checkpoint-every", type=int, default=0, metavar="N",
                        help="save a training checkpoint to --out every N epochs (default: 0, never)")
    parser.add_argument("--out", default=os.path.join("runs", "digits"),
                        help="directory for checkpoints and the final model (default: runs/digits)")
    parser.add_argument("--resume", metavar="PATH", help="continue training from this checkpoint")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (otherwise shown on terminals; the per-epoch lines stay)")
    args = parser.parse_args(argv)
    if (args.epochs is not None and args.epochs < 1) or args.batch_size < 1 or args.checkpoint_every < 0:
        parser.error("--epochs and --batch-size must be positive, --checkpoint-every non-negative")
    return args


def main(argv=None):
    """Train, print per-epoch and final results; returns {"test_accuracy", "model_path"}."""
    args = parse_args(argv)
    x_train, y_train, x_test, y_test = load_splits()
    checkpoint = read_checkpoint(args) if args.resume else None
    if args.epochs is None:
        args.epochs = DEFAULT_EPOCHS
    trainer = Trainer(args)
    if checkpoint is not None:
        trainer.load_checkpoint(checkpoint)
        print(f"resumed from {args.resume} after epoch {trainer.epoch}")
    os.makedirs(args.out, exist_ok=True)
    precision = f"autocast {trainer.dtype}" if trainer.dtype is not None else "float32"
    print(f"model {args.model}, {gt.utils.count_parameters(trainer.model)} parameters, device {args.device}, "
          f"{precision}, {len(x_train)} training / {len(x_test)} test images")

    width = len(str(args.epochs))
    while trainer.epoch < args.epochs:
        loss, train_accuracy = trainer.train_epoch(x_train, y_train, progress=not args.no_progress)
        test_accuracy = trainer.evaluate(x_test, y_test)
        print(f"epoch {trainer.epoch:{width}d}/{args.epochs}  loss {loss:.4f}  "
              f"train accuracy {train_accuracy:.4f}  test accuracy {test_accuracy:.4f}")
        if args.checkpoint_every and trainer.epoch % args.checkpoint_every == 0:
            path = os.path.join(args.out, f"checkpoint_epoch{trainer.epoch:03d}.safetensors")
            gt.save(trainer.checkpoint(), path)
            print(f"checkpoint saved: {path}")

    test_accuracy = trainer.evaluate(x_test, y_test)
    model_path = os.path.join(args.out, f"model_{args.model}.safetensors")
    gt.save(trainer.model.state_dict(), model_path)
    print(f"test accuracy: {test_accuracy:.4f}")
    print(f"model saved: {model_path}")
    return {"test_accuracy": test_accuracy, "model_path": model_path}


if __name__ == "__main__":
    main()
