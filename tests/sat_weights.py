"""Seeded weights of exactly the CMC authors' captioner shapes, and a small vocabulary, for tests.

Drawn with numpy's generator key by key (the same on every machine and torch version), with two changes that
make a random captioner say something short and image-dependent: the ResNet's last BatchNorm of each block is
scaled down (the features stay finite over 101 layers), and LSTM unit 0 has a cell state that grows by the same
step whatever the input, from an image-dependent start, while the <end> logit follows that unit's output: the
caption ends after a few words, sooner for some images than for others.
"""

from __future__ import annotations

import pickle

import numpy as np

WORDS = ("this", "bird", "has", "a", "red", "brown", "white", "black", "yellow", "small", "large", "wings", "belly",
         "crown", "beak", "tail", "and", "with", "long", "short", "is", "the")


def vocabulary_lists() -> tuple[dict[int, str], dict[str, int]]:
    """ixtoword and wordtoix as the authors' build_dictionary lays them out: <pad> 0, the words, then <unk>,
    <start>, <end>."""
    ixtoword = {0: "<pad>", **{i + 1: w for i, w in enumerate(WORDS)}}
    n = len(WORDS) + 1
    ixtoword.update({n: "<unk>", n + 1: "<start>", n + 2: "<end>"})
    return ixtoword, {w: i for i, w in ixtoword.items()}


def write_vocabulary(path) -> None:
    """The authors' captions.textimage.pickle: [train captions, test captions, ixtoword, wordtoix], protocol 2."""
    ixtoword, wordtoix = vocabulary_lists()
    with open(path, "wb") as f:
        pickle.dump([[[wordtoix["<start>"], 2, 3, wordtoix["<end>"]]], [], ixtoword, wordtoix], f, protocol=2)


def captioner_state(encoder_keys: dict[str, tuple], decoder_keys: dict[str, tuple], end_index: int,
                    seed: int = 2021) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """numpy arrays for every key (name -> shape) of the encoder's and decoder's state_dicts."""
    rng = np.random.default_rng([seed, 0])  # the decoder's own stream: the same with or without cls_linear
    encoder = {}
    for key, shape in encoder_keys.items():
        if key.endswith("num_batches_tracked"):
            encoder[key] = np.array(0, np.int64)
        elif key.endswith("running_mean") or key.endswith(".bias"):
            encoder[key] = np.zeros(shape, np.float32)
        elif key.endswith("running_var"):
            encoder[key] = np.ones(shape, np.float32)
        elif len(shape) == 1:  # BatchNorm weight: the blocks' last one small, so the sum over 33 blocks stays finite
            encoder[key] = np.full(shape, 0.2 if ".bn3." in key or key.endswith("downsample.1.weight") else 1.0,
                                   np.float32)
        else:
            fan_in = int(np.prod(shape[1:]))
            encoder[key] = (rng.standard_normal(shape) * np.sqrt(2 / fan_in)).astype(np.float32)
    rng = np.random.default_rng([seed, 1])
    decoder = {}
    for key, shape in decoder_keys.items():
        if key in ("embedding.weight", "fc.weight"):  # the authors' init_weights, 10 and 5 times larger: words
            scale = 1.0 if key == "embedding.weight" else 0.5  # that steer the next word, scores far apart
            decoder[key] = rng.uniform(-scale, scale, shape).astype(np.float32)
        elif key == "fc.bias":
            decoder[key] = np.zeros(shape, np.float32)
        else:
            fan_in = shape[1] if len(shape) == 2 else (decoder_keys[key.replace("bias", "weight")][1])
            bound = 1 / np.sqrt(fan_in)
            decoder[key] = rng.uniform(-bound, bound, shape).astype(np.float32)
    hidden = decoder_keys["init_c.bias"][0]
    gates = [g * hidden for g in range(4)]  # rows of unit 0 in the input, forget, cell and output gates
    for key in ("decode_step.weight_ih", "decode_step.weight_hh", "decode_step.bias_hh"):
        decoder[key][gates] = 0
    decoder["decode_step.bias_ih"][gates] = (6.0, 6.0, 0.6, 6.0)  # c grows by tanh(0.6) a step; h follows it
    decoder["init_h.weight"] *= 40  # the features are small: the start state follows the image
    decoder["init_c.weight"] *= 40
    decoder["init_c.weight"][0] *= 5  # unit 0: an image-dependent start
    decoder["init_c.bias"][0] = -1.5
    decoder["fc.weight"][end_index] = 0
    decoder["fc.weight"][end_index, 0] = 80.0  # <end> once h[0] passes 0.75
    decoder["fc.bias"][end_index] = -60.0
    return encoder, decoder


def save_captioner(path, encoder, decoder, seed: int = 2021) -> None:
    """The authors' checkpoint layout, torch.save({"encoder": state_dict, "decoder": state_dict}), holding the
    seeded weights for `encoder` and `decoder` (modules of the authors' shapes)."""
    import torch

    _, wordtoix = vocabulary_lists()
    enc = {k: tuple(v.shape) for k, v in encoder.state_dict().items()}
    dec = {k: tuple(v.shape) for k, v in decoder.state_dict().items()}
    e, d = captioner_state(enc, dec, wordtoix["<end>"], seed)
    torch.save({"encoder": {k: torch.from_numpy(np.asarray(v)) for k, v in e.items()},
                "decoder": {k: torch.from_numpy(np.asarray(v)) for k, v in d.items()}}, path)


def captioner_images(n: int = 3) -> list[np.ndarray]:
    """n 256 x 256 images of different kinds: a colour gradient, seeded noise, stripes (then more of each)."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:256, 0:256] / 255
    out = []
    for k in range(n):
        a = rng.uniform(0.2, 1, 3)
        if k % 3 == 0:
            image = np.stack([a[0] * xx, a[1] * yy, a[2] * xx * yy], -1)
        elif k % 3 == 1:
            image = rng.uniform(0, 1, (256, 256, 3)) * a
        else:
            image = (np.sin(xx * 40 * a[0] + yy * 20 * a[1])[..., None] > 0) * a
        out.append((255 * image).astype(np.uint8))
    return out


class ScriptedDecoder:
    """A decoder whose next-word scores are a fixed table row of the previous word (seeded), with the interfaces
    of both the authors' DecoderWithAttention (embedding, attention, f_beta, sigmoid, decode_step, fc) and
    cmcbench's (step): beams end at different steps, where the authors' rule of taking `beam_size` candidates
    at every step differs from taking one per live beam."""

    def __init__(self, vocab_size: int, end: int, seed: int = 3):
        import torch

        rng = np.random.default_rng(seed)
        table = rng.normal(0, 3, (vocab_size, vocab_size))
        table[:, end] = rng.normal(-3, 5, vocab_size)  # from some words <end> is likely, from others not
        self.table = torch.from_numpy(table.astype(np.float32))
        self.vocab_size, self.torch = vocab_size, torch
        self.sigmoid = torch.sigmoid

    def init_hidden_state(self, encoder_out):
        z = self.torch.zeros(len(encoder_out), self.vocab_size)
        return z, z

    def embedding(self, words):
        return self.torch.nn.functional.one_hot(words, self.vocab_size).float()

    def attention(self, encoder_out, h):
        return self.torch.zeros(len(h), 0), None

    def f_beta(self, h):
        return self.torch.zeros(len(h), 0)

    def decode_step(self, x, state):
        return x[:, :self.vocab_size], state[1]

    def fc(self, h):
        return h @ self.table

    def step(self, words, encoder_out, h, c):
        h, c = self.decode_step(self.embedding(words).squeeze(1), (h, c))
        return self.torch.log_softmax(self.fc(h), dim=1), h, c

    def to(self, device):
        return self

    def eval(self):
        return self
