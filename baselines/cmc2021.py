"""CMC as its authors ran it (smallflyingpig/cross_modal_compression, ACM MM 2021), from their released files.

Written for cmcbench from the authors' description and code (their captioner is sgrvinod's Show, Attend and
Tell tutorial model): module and parameter names are theirs, so their checkpoints load with
`load_state_dict(strict=True)`. So far: the vocabulary (their `captions.textimage.pickle`, read without
running any code a pickle may carry) and the captioner with their beam search.
"""

from __future__ import annotations

import pathlib
import pickle

import numpy as np

SPECIALS = ("<pad>", "<unk>", "<start>", "<end>")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
MAX_STEPS = 50  # the authors' beam search stops after step 50


class Vocabulary:
    """The authors' word maps: `ixtoword` (index -> word) and `wordtoix`, with <pad> = 0, <unk>, <start> and
    <end> as their dataset code adds them; `size` = len(ixtoword), the captioner's output size."""

    def __init__(self, ixtoword: dict[int, str], wordtoix: dict[str, int], path: str = ""):
        self.ixtoword, self.wordtoix, self.path = ixtoword, wordtoix, path
        missing = [t for t in SPECIALS if t not in wordtoix]
        if missing:
            raise ValueError(f"The vocabulary {path} lacks {', '.join(missing)}: use the captions.textimage.pickle "
                             "the authors' ImageText code writes (AttnGAN's captions.pickle has no <start>/<end>).")
        self.size = len(ixtoword)

    def words(self, ids) -> str:
        """A caption's text: its words without <start>, <end> and <pad>, joined by spaces (as the authors')."""
        skip = {self.wordtoix[t] for t in ("<start>", "<end>", "<pad>")}
        return " ".join(self.ixtoword[int(i)] for i in ids if int(i) not in skip)


class _PlainUnpickler(pickle.Unpickler):
    """Reads only what pickle builds from its own opcodes (lists, dicts, tuples, strings, numbers): asking for
    any class or function (the way a pickle runs code) is refused before it is looked up."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"{module}.{name}")


def load_vocabulary(path: str | pathlib.Path) -> Vocabulary:
    """The vocabulary pickle ([train captions, test captions, ixtoword, wordtoix], protocol 2), read safely."""
    path = pathlib.Path(path)
    try:
        with open(path, "rb") as f:
            data = _PlainUnpickler(f, encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise ValueError(f"{path} is not a plain vocabulary pickle: it asks to load {exc} (a pickle that names a "
                         "class or function can run code), so cmcbench does not read it.") from None
    except (EOFError, OSError, ValueError, IndexError) as exc:
        raise ValueError(f"{path} is not a vocabulary pickle ({exc}).") from None
    if not (isinstance(data, (list, tuple)) and len(data) >= 4 and isinstance(data[2], dict)
            and isinstance(data[3], dict)):
        raise ValueError(f"{path} is not the authors' vocabulary: it should hold [train captions, test captions, "
                         "ixtoword, wordtoix].")
    return Vocabulary({int(k): str(v) for k, v in data[2].items()}, {str(k): int(v) for k, v in data[3].items()},
                      str(path))


def _torch_modules():
    """The authors' captioner modules, built on first use (torch and torchvision are imported only then)."""
    import torch
    import torchvision
    from torch import nn

    class Encoder(nn.Module):
        """ResNet-101 without its pooling and classifier, its map pooled to 14 x 14 (the authors' test-time
        default). `classes`: the post-paper classification head the repository's HEAD adds (`cls_linear`),
        which the captions do not use."""

        def __init__(self, encoded_image_size: int = 14, classes: int = 0):
            super().__init__()
            resnet = torchvision.models.resnet101(weights=None)
            self.resnet = nn.Sequential(*list(resnet.children())[:-2])
            self.adaptive_pool = nn.AdaptiveAvgPool2d((encoded_image_size, encoded_image_size))
            if classes:
                self.cls_linear = nn.Linear(2048, classes)

        def forward(self, images):
            return self.adaptive_pool(self.resnet(images)).permute(0, 2, 3, 1)

    class Attention(nn.Module):
        def __init__(self, encoder_dim: int, decoder_dim: int, attention_dim: int):
            super().__init__()
            self.encoder_att = nn.Linear(encoder_dim, attention_dim)
            self.decoder_att = nn.Linear(decoder_dim, attention_dim)
            self.full_att = nn.Linear(attention_dim, 1)
            self.relu = nn.ReLU()
            self.softmax = nn.Softmax(dim=1)

        def forward(self, encoder_out, decoder_hidden):
            att = self.encoder_att(encoder_out) + self.decoder_att(decoder_hidden).unsqueeze(1)
            alpha = self.softmax(self.full_att(self.relu(att)).squeeze(2))
            return (encoder_out * alpha.unsqueeze(2)).sum(dim=1), alpha

    class DecoderWithAttention(nn.Module):
        def __init__(self, vocab_size: int, attention_dim: int = 512, embed_dim: int = 512, decoder_dim: int = 512,
                     encoder_dim: int = 2048, dropout: float = 0.5):
            super().__init__()
            self.vocab_size = vocab_size
            self.attention = Attention(encoder_dim, decoder_dim, attention_dim)
            self.embedding = nn.Embedding(vocab_size, embed_dim)
            self.dropout = nn.Dropout(p=dropout)
            self.decode_step = nn.LSTMCell(embed_dim + encoder_dim, decoder_dim, bias=True)
            self.init_h = nn.Linear(encoder_dim, decoder_dim)
            self.init_c = nn.Linear(encoder_dim, decoder_dim)
            self.f_beta = nn.Linear(decoder_dim, encoder_dim)
            self.sigmoid = nn.Sigmoid()
            self.fc = nn.Linear(decoder_dim, vocab_size)

        def init_hidden_state(self, encoder_out):
            mean = encoder_out.mean(dim=1)
            return self.init_h(mean), self.init_c(mean)

        def step(self, words, encoder_out, h, c):
            """One step for the live beams: log-probabilities of the next word, and the new state."""
            awe, _ = self.attention(encoder_out, h)
            awe = self.sigmoid(self.f_beta(h)) * awe
            h, c = self.decode_step(torch.cat([self.embedding(words).squeeze(1), awe], dim=1), (h, c))
            return torch.log_softmax(self.fc(h), dim=1), h, c

    return torch, Encoder, DecoderWithAttention


def build_captioner(vocab_size: int, classes: int = 0):
    """(encoder, decoder) of the authors' shapes, randomly initialised (for loading weights into, and tests)."""
    _, Encoder, DecoderWithAttention = _torch_modules()
    return Encoder(classes=classes), DecoderWithAttention(vocab_size)


def _checkpoint(path: pathlib.Path) -> dict:
    """The {"encoder": state_dict, "decoder": state_dict} file, loaded without running code; the tutorial's
    whole pickled modules are refused with the way to convert them."""
    import torch

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"No captioner checkpoint at {path}.") from None
    except pickle.UnpicklingError:
        raise ValueError(f"{path} holds pickled modules (the tutorial's BEST_checkpoint_*.pth.tar format), which "
                         "cmcbench does not unpickle: save their state_dicts with the authors' code, "
                         "torch.save({'encoder': encoder.state_dict(), 'decoder': decoder.state_dict()}, "
                         "'model.pickle'), and pass that file.") from None
    if not (isinstance(data, dict) and isinstance(data.get("encoder"), dict) and isinstance(data.get("decoder"), dict)):
        raise ValueError(f"{path} is not the authors' captioner checkpoint ({{'encoder': state_dict, 'decoder': "
                         "state_dict}}).")
    return data


class Captioner:
    """The authors' captioner: their encoder over a batch of images, then their beam search per image."""

    def __init__(self, encoder, decoder, vocabulary: Vocabulary, device: str = "cpu"):
        import torch

        self.torch = torch
        self.encoder, self.decoder = encoder.to(device).eval(), decoder.to(device).eval()
        self.vocabulary, self.device = vocabulary, device

    def tensor(self, images: list[np.ndarray]):
        """RGB uint8 H x W x 3 images (of one size) as the authors feed them: ToTensor, ImageNet Normalize."""
        torch = self.torch
        x = torch.from_numpy(np.stack(images)).to(self.device).permute(0, 3, 1, 2).float() / 255
        mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def caption_ids(self, images: list[np.ndarray], beam_size: int = 4) -> list[list[int]]:
        """Each image's best beam as token ids (with <start> and <end>); images of one size share a batch."""
        out: list[list[int] | None] = [None] * len(images)
        by_size: dict[tuple, list[int]] = {}
        for i, image in enumerate(images):
            by_size.setdefault(image.shape, []).append(i)
        with self.torch.inference_mode():
            for positions in by_size.values():
                encoded = self.encoder(self.tensor([images[i] for i in positions]))
                for i, features in zip(positions, encoded):
                    out[i] = self.beam_search(features.reshape(1, -1, features.shape[-1]), beam_size)
        return out

    def caption(self, images: list[np.ndarray], beam_size: int = 4) -> list[str]:
        return [self.vocabulary.words(ids) for ids in self.caption_ids(images, beam_size)]

    def beam_search(self, encoder_out, beam_size: int) -> list[int]:
        """The authors' beam search (ImageText/end_to_end_test.py): `beam_size` candidates taken at every step
        from the live beams, finished ones set aside until `beam_size` have finished or step 50 has passed;
        the best finished one wins. Where none finished (their code stops with an error), the best live one."""
        torch, decoder = self.torch, self.decoder
        start, end = self.vocabulary.wordtoix["<start>"], self.vocabulary.wordtoix["<end>"]
        vocab_size = decoder.vocab_size
        encoder_out = encoder_out.expand(beam_size, *encoder_out.shape[1:])
        words = torch.full((beam_size, 1), start, dtype=torch.long, device=encoder_out.device)
        seqs, scores = words, torch.zeros(beam_size, 1, device=encoder_out.device)
        finished, finished_scores = [], []
        h, c = decoder.init_hidden_state(encoder_out)
        left, step = beam_size, 1
        while True:
            logp, h, c = decoder.step(words, encoder_out, h, c)
            logp = scores.expand_as(logp) + logp
            top_scores, top_words = (logp[0] if step == 1 else logp.view(-1)).topk(beam_size, 0, True, True)
            previous, following = top_words // vocab_size, top_words % vocab_size
            seqs = torch.cat([seqs[previous], following.unsqueeze(1)], dim=1)
            live = [k for k, w in enumerate(following.tolist()) if w != end]
            done = sorted(set(range(len(following))) - set(live))
            finished += seqs[done].tolist()
            finished_scores += top_scores[done].tolist()
            left -= len(done)
            if left <= 0:
                break
            seqs, h, c = seqs[live], h[previous[live]], c[previous[live]]
            encoder_out = encoder_out[previous[live]]
            scores, words = top_scores[live].unsqueeze(1), following[live].unsqueeze(1)
            if step > MAX_STEPS:
                break
            step += 1
        if not finished:
            return seqs[int(scores.argmax())].tolist()
        return finished[finished_scores.index(max(finished_scores))]


def load_captioner(checkpoint: str | pathlib.Path, vocabulary: str | pathlib.Path | Vocabulary,
                   device: str = "cpu") -> Captioner:
    """The authors' captioner from their checkpoint (`model_100.pickle` for CUB, `model_60.pickle` for COCO)
    and vocabulary; a checkpoint of other shapes is told in one sentence naming the first mismatch."""
    vocab = vocabulary if isinstance(vocabulary, Vocabulary) else load_vocabulary(vocabulary)
    state = _checkpoint(pathlib.Path(checkpoint))
    classes = state["encoder"]["cls_linear.weight"].shape[0] if "cls_linear.weight" in state["encoder"] else 0
    encoder, decoder = build_captioner(vocab.size, classes)
    for name, module in (("encoder", encoder), ("decoder", decoder)):
        expected = module.state_dict()
        given = state[name]
        missing, extra = sorted(set(expected) - set(given)), sorted(set(given) - set(expected))
        wrong = [k for k in expected if k in given and tuple(given[k].shape) != tuple(expected[k].shape)]
        if missing or extra or wrong:
            what = (f"lacks {missing[0]}" if missing else f"has an unknown {extra[0]}" if extra else
                    f"has {wrong[0]} of shape {tuple(given[wrong[0]].shape)}, not {tuple(expected[wrong[0]].shape)}")
            hint = " (is the vocabulary the checkpoint's?)" if wrong and wrong[0] in (
                "embedding.weight", "fc.weight", "fc.bias") else ""
            raise ValueError(f"The captioner checkpoint {checkpoint}'s {name} {what}{hint}.")
        module.load_state_dict(given, strict=True)
    return Captioner(encoder, decoder, vocab, device)
