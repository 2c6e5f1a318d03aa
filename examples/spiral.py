"""Train a small MLP on a 2-D spiral data set (3 classes), the classic non-linearly separable toy.

    python examples/spiral.py                  # CPU, a few seconds
    python examples/spiral.py --device cuda    # on a GPU (needs gradtensor[cuda12] or [cuda13])

Prints the loss as training goes and the final training accuracy (above 95%).
"""
import argparse

import numpy as np

import gradtensor as gt
import gradtensor.nn.functional as F
from gradtensor import nn


def make_spiral(points_per_class=100, classes=3, noise=0.2, seed=0):
    """Points on `classes` interleaved spiral arms: inputs (N, 2) float32, integer labels (N,)."""
    rng = np.random.default_rng(seed)
    radius = np.tile(np.linspace(0.0, 1.0, points_per_class), classes)
    labels = np.repeat(np.arange(classes), points_per_class)
    # Each arm turns through 4 radians; noise on the angle makes the arms touch near the centre.
    angle = labels * 4.0 + radius * 4.0 + rng.normal(0.0, noise, labels.shape)
    inputs = np.stack([radius * np.sin(angle), radius * np.cos(angle)], axis=1).astype(np.float32)
    return inputs, labels


def train(device="cpu", steps=500, learning_rate=0.01, hidden=64, log_every=50, seed=0):
    """Full-batch Adam on the spiral; returns the final training accuracy."""
    gt.manual_seed(seed)
    inputs, labels = make_spiral(seed=seed)
    x = gt.tensor(inputs, device=device)
    y = gt.tensor(labels, device=device)
    model = nn.Sequential(
        nn.Linear(2, hidden), nn.ReLU(),
        nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, 3),
    ).to(device)
    optimizer = gt.optim.Adam(model.parameters(), lr=learning_rate)
    for step in range(1, steps + 1):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % log_every == 0 or step == 1:
            print(f"step {step:5d}  loss {loss.item():.4f}")
    with gt.no_grad():
        predictions = model(x).argmax(axis=1)
    return (predictions == y).astype(gt.float32).mean().item()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help='"cpu" (default), "cuda" or "cuda:N"')
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--lr", type=float, default=0.01)
    args = parser.parse_args(argv)
    accuracy = train(device=args.device, steps=args.steps, learning_rate=args.lr)
    print(f"final training accuracy: {accuracy:.3f}")
    return accuracy


if __name__ == "__main__":
    main()
