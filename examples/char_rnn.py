"""A character-level LSTM language model, trained with truncated backpropagation through time.

    python examples/char_rnn.py                           # about half a minute on a CPU
    python examples/char_rnn.py --steps 2000 --hidden 256 --device cuda
    python examples/char_rnn.py --text my_book.txt --sample-length 500

The text (by default examples/data/gradtensor_notes.txt, shipped with the repository) is cut into
--batch-size parallel streams, read --chunk characters at a time. The LSTM state is carried from one
chunk to the next and detached at each boundary, so the graph, and the memory it takes, spans a single
chunk while the network still sees everything before it. Prints the mean loss every --log-every steps
(`step   100  loss 2.1234`) and a sampled text every --sample-every steps and at the end.
"""
import argparse
import os

import numpy as np

import gradtensor as gt
import gradtensor.nn.functional as F
from gradtensor import nn

DEFAULT_TEXT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "gradtensor_notes.txt")


class Vocabulary:
    """The characters of a text, each mapped to an integer id."""

    def __init__(self, text):
        self.chars = sorted(set(text))
        self.index = {char: i for i, char in enumerate(self.chars)}

    def __len__(self):
        return len(self.chars)

    def encode(self, text):
        unknown = sorted(set(text) - set(self.index))
        if unknown:
            raise ValueError(f"characters {''.join(unknown)!r} do not occur in the training text")
        return np.array([self.index[char] for char in text], dtype=np.int64)

    def decode(self, ids):
        return "".join(self.chars[i] for i in ids)


class CharLSTM(nn.Module):
    """Embedding -> LSTM -> Linear: the logits of the next character at every position."""

    def __init__(self, vocab_size, embed_size, hidden_size, num_layers):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_size)
        self.lstm = nn.LSTM(embed_size, hidden_size, num_layers=num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, ids, state=None):
        """ids (N, L) int64; state (h, c) or None. Returns logits (N, L, vocab) and the new state."""
        output, state = self.lstm(self.embedding(ids), state)
        return self.head(output), state


def detach_state(state):
    """Cut the graph at a chunk boundary (truncated BPTT) while keeping the state's values."""
    return None if state is None else tuple(s.detach() for s in state)


def make_streams(ids, batch_size, chunk):
    """ids cut into batch_size equal rows, read left to right in parallel: (batch_size, length)."""
    length = len(ids) // batch_size
    if length < chunk + 1:
        raise SystemExit(f"the text has {len(ids)} characters: too short for --batch-size {batch_size} "
                         f"streams of at least --chunk {chunk} + 1 characters")
    return ids[: length * batch_size].reshape(batch_size, length)


def sample(model, vocab, prompt, length, temperature, rng, device):
    """Feed `prompt`, then draw `length` characters one at a time from the model's softmax."""
    model.eval()
    with gt.no_grad():
        ids = gt.tensor(vocab.encode(prompt)[None], device=device)
        logits, state = model(ids)
        drawn = []
        for _ in range(length):
            probs = F.softmax(logits[0, -1] / temperature, axis=-1).numpy().astype(np.float64)
            next_id = int(rng.choice(len(vocab), p=probs / probs.sum()))
            drawn.append(next_id)
            logits, state = model(gt.tensor([[next_id]], device=device), state)
    model.train()
    return prompt + vocab.decode(drawn)


def train(args):
    """Train for args.steps chunks; returns the list of logged (step, mean loss) pairs."""
    with open(args.text, encoding="utf-8") as f:
        text = f.read()
    vocab = Vocabulary(text)
    streams = make_streams(vocab.encode(text), args.batch_size, args.chunk)
    print(f"text: {len(text)} characters, {len(vocab)} distinct; {args.batch_size} streams of "
          f"{streams.shape[1]} characters, read in chunks of {args.chunk}")

    gt.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = CharLSTM(len(vocab), args.embed, args.hidden, args.layers).to(args.device)
    optimizer = gt.optim.Adam(model.parameters(), lr=args.lr)
    scheduler = gt.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.steps, eta_min=args.lr / 10)
    print(f"model: {gt.utils.count_parameters(model)} parameters on {args.device}")

    state, position = None, 0
    logged = []
    loss_sum, losses_since_log = 0.0, 0
    for step in range(1, args.steps + 1):
        if position + args.chunk + 1 > streams.shape[1]:
            state, position = None, 0  # the end of the text: start every stream again from a blank state
        inputs = gt.tensor(streams[:, position:position + args.chunk], device=args.device)
        targets = gt.tensor(streams[:, position + 1:position + args.chunk + 1], device=args.device)
        position += args.chunk

        logits, state = model(inputs, detach_state(state))
        loss = F.cross_entropy(logits.reshape(-1, len(vocab)), targets.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        optimizer.step()
        scheduler.step()

        loss_sum, losses_since_log = loss_sum + loss.detach(), losses_since_log + 1
        if step == 1 or step % args.log_every == 0 or step == args.steps:
            mean_loss = loss_sum.item() / losses_since_log
            logged.append((step, mean_loss))
            print(f"step {step:5d}  loss {mean_loss:.4f}")
            loss_sum, losses_since_log = 0.0, 0
        if args.sample_every and step % args.sample_every == 0 and step != args.steps:
            print_sample(model, vocab, args, rng, f"sample at step {step}")
    print_sample(model, vocab, args, rng, "final sample")
    return logged


def print_sample(model, vocab, args, rng, title):
    text = sample(model, vocab, args.prompt, args.sample_length, args.temperature, rng, args.device)
    print(f"--- {title} ---\n{text}\n---")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--text", default=DEFAULT_TEXT, help="UTF-8 text file to learn (default: the shipped notes)")
    parser.add_argument("--steps", type=int, default=300, help="training steps, one chunk each (default: 300)")
    parser.add_argument("--chunk", type=int, default=32, help="characters per chunk: the BPTT length (default: 32)")
    parser.add_argument("--batch-size", type=int, default=16, help="parallel text streams (default: 16)")
    parser.add_argument("--embed", type=int, default=32, help="character embedding size (default: 32)")
    parser.add_argument("--hidden", type=int, default=128, help="LSTM hidden size (default: 128)")
    parser.add_argument("--layers", type=int, default=1, help="LSTM layers (default: 1)")
    parser.add_argument("--lr", type=float, default=5e-3, help="Adam's learning rate, cosine-annealed to lr/10")
    parser.add_argument("--clip", type=float, default=1.0, help="gradient norm clipping threshold (default: 1.0)")
    parser.add_argument("--log-every", type=int, default=25, help="print the mean loss every N steps")
    parser.add_argument("--sample-every", type=int, default=100,
                        help="print a sample every N steps (0: only at the end; default: 100)")
    parser.add_argument("--sample-length", type=int, default=200, help="characters per sample (default: 200)")
    parser.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (default: 0.8)")
    parser.add_argument("--prompt", default="The ", help='text the samples start from (default: "The ")')
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the samples")
    parser.add_argument("--device", default="cuda" if gt.cuda.is_available() else "cpu",
                        help='"cpu", "cuda" or "cuda:N" (default: cuda when available, else cpu)')
    args = parser.parse_args(argv)
    if min(args.steps, args.chunk, args.batch_size, args.log_every) < 1 or args.temperature <= 0 or not args.prompt:
        parser.error("--steps, --chunk, --batch-size and --log-every must be positive, --temperature > 0, "
                     "--prompt non-empty")
    return args


def main(argv=None):
    """Train and sample; returns the logged (step, mean loss) pairs."""
    return train(parse_args(argv))


if __name__ == "__main__":
    main()
