"""CMC as its authors ran it (smallflyingpig/cross_modal_compression, ACM MM 2021), from their released files.

Written for cmcbench from the authors' description and code (their captioner is sgrvinod's Show, Attend and
Tell tutorial model): module and parameter names are theirs, so their checkpoints load with
`load_state_dict(strict=True)`. So far: the vocabulary (their `captions.textimage.pickle`, read without
running any code a pickle may carry), the captioner with their beam search, and the generator (AttnGAN's G_NET
with the DAMSM text encoder).
"""

from __future__ import annotations

import functools
import hashlib
import pathlib
import pickle
import re
from dataclasses import dataclass

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
    """The vocabulary pickle ([train captions, test captions, ixtoword, wordtoix], protocol 2), read safely, or
    the word map JSON their COCO code reads (WORDMAP_coco_*.json: {word: index})."""
    path = pathlib.Path(path)
    if path.suffix == ".json":
        import json

        try:
            wordtoix = {str(k): int(v) for k, v in json.loads(path.read_text()).items()}
        except (OSError, ValueError, AttributeError) as exc:
            raise ValueError(f"{path} is not a word map ({{word: index}} JSON): {exc}.") from None
        return Vocabulary({i: w for w, i in wordtoix.items()}, wordtoix, str(path))
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
    data = _state_dict(path, "captioner checkpoint", "(the tutorial's BEST_checkpoint_*.pth.tar format): save "
                       "their state_dicts with the authors' code, torch.save({'encoder': encoder.state_dict(), "
                       "'decoder': decoder.state_dict()}, 'model.pickle'), and pass that file")
    if not (isinstance(data.get("encoder"), dict) and isinstance(data.get("decoder"), dict)):
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
        _load_strict(module, state[name], f"captioner checkpoint {checkpoint}'s {name}")
    return Captioner(encoder, decoder, vocab, device)


@dataclass(frozen=True)
class AttnGANShape:
    """The sizes the authors' configs give AttnGAN (cfg/bird_eval.yml, cfg/coco_eval.yml; the rest defaults)."""

    gf_dim: int
    r_num: int
    z_dim: int = 100
    condition_dim: int = 100
    embedding_dim: int = 256  # the DAMSM text encoder's (both directions together)
    word_dim: int = 300  # its word embedding


ATTNGAN_SHAPES = {"birds": AttnGANShape(gf_dim=32, r_num=2), "coco": AttnGANShape(gf_dim=48, r_num=3)}


def _attngan_modules():
    """AttnGAN's generator and DAMSM text encoder (taoxugit/AttnGAN, as the CMC authors use them), built on
    first use."""
    import torch
    from torch import nn

    class GLU(nn.Module):
        def forward(self, x):
            n = x.size(1) // 2
            return x[:, :n] * torch.sigmoid(x[:, n:])

    def conv3x3(i, o):
        return nn.Conv2d(i, o, kernel_size=3, stride=1, padding=1, bias=False)

    def up_block(i, o):
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv3x3(i, o * 2), nn.BatchNorm2d(o * 2),
                             GLU())

    class ResBlock(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.block = nn.Sequential(conv3x3(channels, channels * 2), nn.BatchNorm2d(channels * 2), GLU(),
                                       conv3x3(channels, channels), nn.BatchNorm2d(channels))

        def forward(self, x):
            return self.block(x) + x

    class TextEncoder(nn.Module):
        """DAMSM's RNN_ENCODER: word embedding, one bidirectional LSTM layer; words' and sentence's features."""

        def __init__(self, ntoken, shape):
            super().__init__()
            self.encoder = nn.Embedding(ntoken, shape.word_dim)
            self.rnn = nn.LSTM(shape.word_dim, shape.embedding_dim // 2, 1, batch_first=True, bidirectional=True)

        def forward(self, captions, lengths):
            from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

            packed = pack_padded_sequence(self.encoder(captions), lengths.cpu(), batch_first=True)
            output, (h, _) = self.rnn(packed)
            words = pad_packed_sequence(output, batch_first=True)[0].transpose(1, 2)
            return words, h.transpose(0, 1).reshape(len(captions), -1)

    class CANet(nn.Module):
        def __init__(self, shape):
            super().__init__()
            self.c_dim = shape.condition_dim
            self.fc = nn.Linear(shape.embedding_dim, shape.condition_dim * 4, bias=True)
            self.relu = GLU()

        def forward(self, sentence, eps):
            x = self.relu(self.fc(sentence))
            mu, logvar = x[:, :self.c_dim], x[:, self.c_dim:]
            return eps * logvar.mul(0.5).exp() + mu

    class InitStage(nn.Module):
        def __init__(self, ngf, shape):
            super().__init__()
            self.gf_dim = ngf
            self.fc = nn.Sequential(nn.Linear(shape.z_dim + shape.condition_dim, ngf * 4 * 4 * 2, bias=False),
                                    nn.BatchNorm1d(ngf * 4 * 4 * 2), GLU())
            self.upsample1, self.upsample2 = up_block(ngf, ngf // 2), up_block(ngf // 2, ngf // 4)
            self.upsample3, self.upsample4 = up_block(ngf // 4, ngf // 8), up_block(ngf // 8, ngf // 16)

        def forward(self, z, c):
            x = self.fc(torch.cat((c, z), 1)).view(-1, self.gf_dim, 4, 4)
            return self.upsample4(self.upsample3(self.upsample2(self.upsample1(x))))

    class WordAttention(nn.Module):
        """GlobalAttentionGeneral. `published`: its mask as the authors apply it, `mask.repeat(queryL, 1)` on
        batch-major rows, so in a batch each caption's attention is masked with other captions' padding."""

        def __init__(self, idf, cdf):
            super().__init__()
            self.conv_context = nn.Conv2d(cdf, idf, kernel_size=1, stride=1, padding=0, bias=False)
            self.sm = nn.Softmax(dim=1)

        def forward(self, x, context, mask, published):
            b, query = x.size(0), x.size(2) * x.size(3)
            source = self.conv_context(context.unsqueeze(3)).squeeze(3)
            attn = torch.bmm(x.view(b, -1, query).transpose(1, 2), source).view(b * query, -1)
            rows = mask.repeat(query, 1) if published else mask.repeat_interleave(query, 0)
            attn = self.sm(attn.masked_fill(rows, -float("inf"))).view(b, query, -1).transpose(1, 2)
            return torch.bmm(source, attn).view(b, -1, x.size(2), x.size(3))

    class NextStage(nn.Module):
        def __init__(self, ngf, shape):
            super().__init__()
            self.att = WordAttention(ngf, shape.embedding_dim)
            self.residual = nn.Sequential(*[ResBlock(ngf * 2) for _ in range(shape.r_num)])
            self.upsample = up_block(ngf * 2, ngf)

        def forward(self, h, words, mask, published):
            return self.upsample(self.residual(torch.cat((h, self.att(h, words, mask, published)), 1)))

    class ImageStage(nn.Module):
        def __init__(self, ngf):
            super().__init__()
            self.img = nn.Sequential(conv3x3(ngf, 3), nn.Tanh())

        def forward(self, h):
            return self.img(h)

    class Generator(nn.Module):
        """G_NET with three stages (64, 128, 256 px); returns the 256 px image in [-1, 1]."""

        def __init__(self, shape):
            super().__init__()
            ngf = shape.gf_dim
            self.ca_net = CANet(shape)
            self.h_net1, self.img_net1 = InitStage(ngf * 16, shape), ImageStage(ngf)
            self.h_net2, self.img_net2 = NextStage(ngf, shape), ImageStage(ngf)
            self.h_net3, self.img_net3 = NextStage(ngf, shape), ImageStage(ngf)

        def forward(self, z, eps, sentence, words, mask, published=False):
            c = self.ca_net(sentence, eps)
            h = self.h_net1(z, c)
            h = self.h_net2(h, words, mask, published)
            return self.img_net3(self.h_net3(h, words, mask, published))

    return torch, TextEncoder, Generator


def build_generator(vocab_size: int, shape: AttnGANShape):
    """(text encoder, generator) of the authors' shapes, randomly initialised."""
    _, TextEncoder, Generator = _attngan_modules()
    return TextEncoder(vocab_size, shape), Generator(shape)


def tokens(text: str, vocabulary: Vocabulary) -> list[int]:
    """The authors' tokens of a caption (end_to_end_test.gen_example): <start>, the lower-cased caption's
    \\w+ words (ASCII letters kept) that are in the vocabulary, <end>."""
    words = re.findall(r"\w+", text.replace("\ufffd\ufffd", " ").lower())
    words = [w.encode("ascii", "ignore").decode("ascii") for w in ["<start>", *words, "<end>"]]
    return [vocabulary.wordtoix[w] for w in words if w and w in vocabulary.wordtoix]


def text_noise(text: str, seed: int, z_dim: int, condition_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(z, eps) of one text: standard normal draws seeded by `seed` and the text's bytes alone."""
    digest = hashlib.sha256(f"{int(seed)}|".encode() + text.encode("utf-8")).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    return (rng.standard_normal(z_dim).astype(np.float32), rng.standard_normal(condition_dim).astype(np.float32))


class Generator:
    """The authors' text-to-image generator: DAMSM text encoder, then G_NET's 256 x 256 image."""

    def __init__(self, text_encoder, generator, vocabulary: Vocabulary, shape: AttnGANShape, device: str = "cpu"):
        import torch

        self.torch = torch
        self.text_encoder, self.generator = text_encoder.to(device).eval(), generator.to(device).eval()
        self.vocabulary, self.shape, self.device = vocabulary, shape, device

    def generate(self, texts: list[str], z=None, eps=None, seed: int = 0, as_published: bool = False
                 ) -> list[np.ndarray]:
        """uint8 256 x 256 x 3 images of `texts`. `z` and `eps` (len(texts) x 100) replace the seeded draws.
        as_published: `texts` are one of the authors' batches (sorted by length, longest first, padded to the
        longest; their mask arithmetic included), so their images can be reproduced. Otherwise each text is
        generated alone: even texts of one length, batched, come out a grey level apart here and there (the
        batched arithmetic rounds differently), and a decoded image must depend on its own bitstream only."""
        if z is None or eps is None:
            drawn = [text_noise(t, seed, self.shape.z_dim, self.shape.condition_dim) for t in texts]
            z = np.stack([d[0] for d in drawn]) if z is None else z
            eps = np.stack([d[1] for d in drawn]) if eps is None else eps
        ids = [tokens(t, self.vocabulary) for t in texts]
        if as_published:
            return self._batch(ids, np.asarray(z), np.asarray(eps), published=True)
        z, eps = np.asarray(z), np.asarray(eps)
        return [self._batch([t], z[i:i + 1], eps[i:i + 1], False)[0] for i, t in enumerate(ids)]

    def _batch(self, ids: list[list[int]], z: np.ndarray, eps: np.ndarray, published: bool) -> list[np.ndarray]:
        torch = self.torch
        lengths = torch.tensor([len(t) for t in ids])
        captions = torch.zeros(len(ids), int(lengths.max()), dtype=torch.long)
        for i, t in enumerate(ids):
            captions[i, :len(t)] = torch.tensor(t)
        with torch.inference_mode():
            captions = captions.to(self.device)
            words, sentence = self.text_encoder(captions, lengths)
            mask = captions == 0
            image = self.generator(torch.from_numpy(np.ascontiguousarray(z, np.float32)).to(self.device),
                                   torch.from_numpy(np.ascontiguousarray(eps, np.float32)).to(self.device),
                                   sentence, words, mask, published)
        pixels = ((image.float().cpu().numpy() + 1.0) * 127.5).astype(np.uint8)  # truncated, as the authors save
        return list(np.ascontiguousarray(pixels.transpose(0, 2, 3, 1)))


def _state_dict(path: pathlib.Path, what: str, pickled: str = "") -> dict:
    """A file of tensors (a state_dict, or a dict of them) loaded with torch.load(weights_only=True): nothing in
    it runs; a file of pickled objects is refused in one sentence (`pickled`: what it is and how to convert it)."""
    import torch

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"No {what} at {path}.") from None
    except pickle.UnpicklingError:
        raise ValueError(f"{path} holds pickled modules or objects {pickled or 'instead of state_dicts'}; "
                         "cmcbench does not unpickle them.") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a state_dict of the {what}.")
    return data


def _load_strict(module, state: dict, label: str, other: str = "") -> None:
    """load_state_dict(strict=True), its first mismatch told in one sentence naming `label` (the file and part);
    `other`: what a mismatch beyond the vocabulary's layers most likely means."""
    expected = module.state_dict()
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or extra or wrong:
        what = (f"lacks {missing[0]}" if missing else f"has an unknown {extra[0]}" if extra else
                f"has {wrong[0]} of shape {tuple(state[wrong[0]].shape)}, not {tuple(expected[wrong[0]].shape)}")
        vocabulary_layer = wrong and wrong[0] in ("embedding.weight", "fc.weight", "fc.bias", "encoder.weight")
        hint = " (is the vocabulary the checkpoint's?)" if vocabulary_layer else f" ({other})" if other else ""
        raise ValueError(f"The {label} {what}{hint}.")
    module.load_state_dict(state, strict=True)


def load_generator(generator: str | pathlib.Path, text_encoder: str | pathlib.Path,
                   vocabulary: str | pathlib.Path | Vocabulary, device: str = "cpu",
                   dataset: str = "birds") -> Generator:
    """AttnGAN's generator (bird_AttnGAN2.pth / coco_AttnGAN2.pth, or the authors' netG_epoch_*.pth) and DAMSM
    text encoder (text_encoder200.pth / text_encoder100.pth) of `dataset` ("birds", "coco", or "auto": told by
    the generator's sizes)."""
    vocab = vocabulary if isinstance(vocabulary, Vocabulary) else load_vocabulary(vocabulary)
    state = _state_dict(pathlib.Path(generator), "generator")
    if dataset == "auto":  # the sizes tell birds' from COCO's: its image layer's width, its residual blocks
        width = tuple(getattr(state.get("img_net3.img.0.weight"), "shape", (0, 0)))[1]
        dataset = next((name for name, shape in ATTNGAN_SHAPES.items() if shape.gf_dim == width), "birds")
    if dataset not in ATTNGAN_SHAPES:
        raise ValueError(f"AttnGAN comes for birds or coco, not {dataset!r}.")
    shape = ATTNGAN_SHAPES[dataset]
    encoder, net = build_generator(vocab.size, shape)
    _load_strict(encoder, _state_dict(pathlib.Path(text_encoder), "text encoder"), f"text encoder {text_encoder}")
    _load_strict(net, state, f"{dataset} generator {generator}",
                 "a generator of the other dataset? birds and COCO differ in size")
    return Generator(encoder, net, vocab, shape, device)


# ---- The authors' parts inside cmcbench's CMC codec, and the `cmc2021 weights=DIR` shortcut ----

PREFIXES = {"captioner": "sat:", "generator": "attngan:"}  # how a CMC spec names the authors' parts


def authors_file(options: dict, part: str) -> str | None:
    """The file of the authors' `part` a CMC spec names (captioner=sat:FILE, generator=attngan:FILE), else None."""
    value, prefix = options[part], PREFIXES[part]
    return value[len(prefix):] if value.startswith(prefix) else None


def authors_parts(options: dict) -> bool:
    """Whether a CMC spec uses the authors' captioner or generator."""
    return any(authors_file(options, part) for part in PREFIXES)


def dataset_family(dataset: str) -> str | None:
    """"birds" or "coco" for a CUB or MS-COCO dataset spec (cub:PATH, cub-200-2011, coco:PATH, coco2014-val...),
    else None."""
    name = str(dataset).lower()
    return "birds" if name.startswith(("cub", "birds")) else "coco" if name.startswith("coco") else None


def check_parts(options: dict, dataset: str = "") -> None:
    """Before any work: the files the authors' parts need exist and fit each other and the dataset, else one
    sentence."""
    if not options["vocabulary"]:
        raise ValueError("cmc's sat: captioner and attngan: generator read the authors' vocabulary: pass "
                         "vocabulary=FILE (their captions.textimage.pickle).")
    captioner, generator_file = authors_file(options, "captioner"), authors_file(options, "generator")
    if generator_file and not options["text_encoder"]:
        raise ValueError("cmc generator=attngan:FILE needs its DAMSM text encoder: pass text_encoder=FILE "
                         "(text_encoder200.pth for birds, text_encoder100.pth for COCO).")
    vocabulary = _vocabulary(options["vocabulary"])
    if captioner:
        _loaded_captioner(captioner, vocabulary, "cpu")
    if generator_file:
        generator = _loaded_generator(generator_file, options["text_encoder"], vocabulary, "cpu")
        family, made_for = dataset_family(dataset), next(k for k, v in ATTNGAN_SHAPES.items() if v == generator.shape)
        if family and family != made_for:
            raise ValueError(f"The generator {generator_file} is AttnGAN's {made_for} model (by its sizes), "
                             f"but the dataset {dataset} is {family}: use the {family} files.")


@functools.lru_cache(maxsize=2)
def _vocabulary(path: str) -> Vocabulary:
    return load_vocabulary(path)


@functools.lru_cache(maxsize=2)
def _loaded_captioner(path: str, vocabulary: Vocabulary, device: str) -> Captioner:
    return load_captioner(path, vocabulary, device)


@functools.lru_cache(maxsize=2)
def _loaded_generator(path: str, text_encoder: str, vocabulary: Vocabulary, device: str) -> Generator:
    return load_generator(path, text_encoder, vocabulary, device, dataset="auto")


def _identity(**files: str) -> dict:
    """The files a part was loaded from, with their sha256 (declared in the results and the config hash)."""
    from metrics.download import file_digest

    return {name: {"path": path, "sha256": file_digest(path)} for name, path in files.items()}


class AuthorsCaptioner:
    """The authors' captioner as a CMC part: a batch of images to captions (beam 4, their search)."""

    def __init__(self, options: dict, device: str):
        from baselines.cmc_models import pick_device

        self.files = {"checkpoint": authors_file(options, "captioner"), "vocabulary": options["vocabulary"]}
        self.model = _loaded_captioner(self.files["checkpoint"], _vocabulary(options["vocabulary"]),
                                       pick_device(device))

    def __call__(self, image: np.ndarray) -> str:
        return self.batch([image])[0]

    def batch(self, images: list[np.ndarray]) -> list[str]:
        return self.model.caption(images, beam_size=4)

    def identity(self) -> dict:
        return {"cmc2021 sat": _identity(**self.files), "beam_size": 4}

    def versions(self) -> dict:
        import torchvision

        return {"torchvision": torchvision.__version__}


class AuthorsGenerator:
    """The authors' AttnGAN as a CMC part: each text generated alone, its z and eps drawn from its bitstream's
    seed, so a decoded image depends on its own bitstream only."""

    def __init__(self, options: dict, device: str):
        from baselines.cmc_models import pick_device

        self.files = {"generator": authors_file(options, "generator"), "text_encoder": options["text_encoder"],
                      "vocabulary": options["vocabulary"]}
        self.model = _loaded_generator(self.files["generator"], self.files["text_encoder"],
                                       _vocabulary(options["vocabulary"]), pick_device(device))

    def batch(self, texts: list[str], seeds: list[int]) -> list[np.ndarray]:
        return [self.model.generate([text], seed=seed)[0] for text, seed in zip(texts, seeds)]

    def identity(self) -> dict:
        return {"cmc2021 attngan": _identity(**self.files),
                "seeding": "each bitstream's own: z and eps ~ N(0, 1) from sha256(seed, bytes)"}

    def versions(self) -> dict:
        import torch

        return {"torch": torch.__version__}


RELEASE_FILES = {  # what `cmc2021 weights=DIR` looks for: the authors' names and AttnGAN's own
    "captioner": ("model_*.pickle",),
    "generator": ("netG_epoch_*.pth", "*_AttnGAN2.pth"),
    "text_encoder": ("text_encoder*.pth",),
    "vocabulary": ("captions.textimage.pickle", "WORDMAP_*.json"),
}


def release_files(folder: str | pathlib.Path) -> dict[str, str]:
    """The captioner, generator, text encoder and vocabulary in a folder of the authors' release, one of each,
    else one sentence naming what is missing or ambiguous."""
    folder = pathlib.Path(folder).expanduser()
    if not folder.is_dir():
        raise ValueError(f"cmc2021 weights={folder}: no such folder (it should hold the authors' released files).")
    out = {}
    for part, patterns in RELEASE_FILES.items():
        found = sorted({str(p.resolve()) for pattern in patterns for p in folder.glob(pattern)})
        if len(found) != 1:
            names = ": " + ", ".join(pathlib.Path(f).name for f in found) if found else ""
            prefix = PREFIXES.get(part, "")
            raise ValueError(f"cmc2021 weights={folder}: {'more than one' if found else 'no'} {part} file "
                             f"({' or '.join(patterns)}){names}; name it with {part}={prefix}FILE.")
        out[part] = found[0]
    return out
