"""Lossless text codecs for the compressed domain of cross-modal codecs (a caption to bytes and back).

- `huffman`: the CMC paper's coder: static canonical Huffman over characters, frequencies counted on the
  training captions, an end-of-caption symbol coded and charged, and an escape symbol followed by the
  raw UTF-8 bytes for characters never seen in training. The code table is side information.
- `huffman2021`: the CMC authors' own coder (their EntropyCoding, Nayuki's reference Huffman): a static code
  over the 256 byte values plus an end symbol (frequency 1), with its tie-breaking, so its code lengths equal
  theirs. Each caption ends with the end symbol, charged (the authors' `--mode statistic` counts only the
  caption's characters: `published_bits`). Characters outside U+0000-U+00FF or absent from the training
  captions have no codeword in it, as in theirs: encoding them fails in one sentence.
- `context`: an order-3 character context model (interpolated with orders 2, 1, 0) fitted on the training
  captions, driven through constriction's range coder; same end and escape symbols.
- `utf8`, `zlib`, `brotli`, `zstd`: general-purpose baselines, no training.

Every codec round-trips any Unicode text exactly. A text codec is fitted on training captions only; the
fitted model is deterministic, so encoder and decoder build the same one from the same captions.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
import zlib
from collections import Counter, defaultdict
from typing import Iterable

import numpy as np

EOS = "\x00<eos>"
ESC = "\x00<esc>"


class TextCodec:
    name = ""

    def fit(self, captions: Iterable[str]) -> "TextCodec":
        return self

    def encode(self, text: str) -> bytes:
        raise NotImplementedError

    def decode(self, data: bytes) -> str:
        raise NotImplementedError

    def table(self) -> bytes:
        """The serialised side information both ends share (empty when there is none)."""
        return b""

    def side_information(self) -> dict:
        t = self.table()
        return {"text_codec": self.name, "table_bytes": len(t), "table_sha256": hashlib.sha256(t).hexdigest()}


class UTF8(TextCodec):
    name = "utf8"

    def encode(self, text):
        return text.encode("utf-8")

    def decode(self, data):
        return data.decode("utf-8")


class Zlib(UTF8):
    name = "zlib"

    def encode(self, text):
        return zlib.compress(text.encode("utf-8"), 9)

    def decode(self, data):
        return zlib.decompress(data).decode("utf-8")


class Brotli(UTF8):
    name = "brotli"

    def encode(self, text):
        import brotli

        return brotli.compress(text.encode("utf-8"), quality=11)

    def decode(self, data):
        import brotli

        return brotli.decompress(data).decode("utf-8")


class Zstd(UTF8):
    name = "zstd"

    def encode(self, text):
        import zstandard

        return zstandard.ZstdCompressor(level=19, write_content_size=False, write_checksum=False).compress(
            text.encode("utf-8"))

    def decode(self, data):
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj().decompress(data).decode("utf-8")


class _BitWriter:
    def __init__(self):
        self.bits: list[str] = []

    def write(self, code: str) -> None:
        self.bits.append(code)

    def getvalue(self) -> tuple[bytes, int]:
        s = "".join(self.bits)
        n = len(s)
        s += "0" * (-n % 8)
        return int(s, 2).to_bytes(len(s) // 8, "big") if s else b"", n


def _symbols(text: str, alphabet) -> list[str]:
    """A caption as coded symbols: known characters, ESC + raw UTF-8 for unknown ones, then EOS."""
    return [c if c in alphabet else ESC for c in text] + [EOS]


class Huffman(TextCodec):
    name = "huffman"

    def fit(self, captions):
        counts = Counter()
        n = 0
        for caption in captions:
            counts.update(caption)
            n += 1
        counts[EOS] = max(n, 1)
        counts[ESC] = 1  # characters never seen in training stay codable
        self.counts = dict(counts)
        self.lengths = _huffman_lengths(self.counts)
        self.codes = _canonical(self.lengths)
        self.decode_table = {code: sym for sym, code in self.codes.items()}
        return self

    def table(self):
        return json.dumps(sorted(self.lengths.items()), ensure_ascii=False).encode("utf-8")

    def encode_bits(self, text: str) -> tuple[bytes, int]:
        w = _BitWriter()
        for ch in text:
            code = self.codes.get(ch)
            if code is None:
                w.write(self.codes[ESC])
                w.write("".join(f"{b:08b}" for b in ch.encode("utf-8")))
            else:
                w.write(code)
        w.write(self.codes[EOS])
        return w.getvalue()

    def encode(self, text):
        return self.encode_bits(text)[0]

    def decode(self, data):
        bits = "".join(f"{b:08b}" for b in data)
        out, code, i = [], "", 0
        while i < len(bits):
            code += bits[i]
            i += 1
            sym = self.decode_table.get(code)
            if sym is None:
                continue
            code = ""
            if sym == EOS:
                return "".join(out)
            if sym == ESC:
                lead = int(bits[i:i + 8], 2)
                n = 1 if lead < 0x80 else 2 if lead >> 5 == 0b110 else 3 if lead >> 4 == 0b1110 else 4
                raw = int(bits[i:i + 8 * n], 2).to_bytes(n, "big")
                out.append(raw.decode("utf-8"))
                i += 8 * n
            else:
                out.append(sym)
        raise ValueError("Huffman bitstream ended before the end-of-caption symbol.")

    def entropy(self) -> float:
        """Entropy (bits per symbol) of the training distribution the code was built for."""
        total = sum(self.counts.values())
        return -sum(c / total * math.log2(c / total) for c in self.counts.values())

    def expected_length(self) -> float:
        total = sum(self.counts.values())
        return sum(c / total * self.lengths[s] for s, c in self.counts.items())


def _huffman_lengths(counts: dict[str, int]) -> dict[str, int]:
    if len(counts) == 1:
        return {next(iter(counts)): 1}
    heap = [(c, i, (s,)) for i, (s, c) in enumerate(sorted(counts.items()))]
    heapq.heapify(heap)
    lengths = dict.fromkeys(counts, 0)
    tie = len(heap)
    while len(heap) > 1:
        c1, _, s1 = heapq.heappop(heap)
        c2, _, s2 = heapq.heappop(heap)
        for s in s1 + s2:
            lengths[s] += 1
        heapq.heappush(heap, (c1 + c2, tie, s1 + s2))
        tie += 1
    return lengths


def _canonical(lengths: dict[str, int]) -> dict[str, str]:
    codes, code, prev = {}, 0, 0
    for sym, n in sorted(lengths.items(), key=lambda kv: (kv[1], kv[0])):
        code <<= n - prev
        codes[sym] = format(code, f"0{n}b")
        code += 1
        prev = n
    return codes


class Huffman2021(TextCodec):
    """The CMC authors' text coder (smallflyingpig/cross_modal_compression, EntropyCoding/), rewritten: symbol =
    a character's code point (their `ord(c)` over the caption's characters), 257 symbols with the end symbol
    256, frequencies from the training captions plus 1 for the end symbol, Nayuki's tree (ties broken by the
    lowest symbol a subtree holds) made canonical (shorter codes first, ties by lower symbol)."""

    name = "huffman2021"
    END = 256

    def fit(self, captions):
        frequencies = [0] * (self.END + 1)
        for caption in captions:
            for ch in caption:
                if ord(ch) < self.END:  # the authors' table has no place for others (their coder stops there)
                    frequencies[ord(ch)] += 1
        frequencies[self.END] += 1
        self.lengths = nayuki_code_lengths(frequencies)
        self.codes = _canonical({s: n for s, n in enumerate(self.lengths) if n})
        self.decode_table = {code: sym for sym, code in self.codes.items()}
        return self

    def table(self):
        """The 257 code lengths, one byte each: the header the authors' compressed files start with."""
        return bytes(self.lengths)

    def _codes_of(self, text: str) -> list[str]:
        try:
            return [self.codes[ord(ch)] for ch in text]
        except KeyError:
            bad = next(ch for ch in text if ord(ch) not in self.codes)
            raise ValueError(f"huffman2021 has no codeword for {bad!r} (U+{ord(bad):04X}): the authors' code covers "
                             "only characters U+0000-U+00FF that occur in the training captions; use "
                             "text_codec=huffman, which escapes them.") from None

    def published_bits(self, text: str) -> int:
        """The bits the authors' `--mode statistic` counts for this caption: its characters' code lengths, no
        end symbol, no table."""
        return sum(len(code) for code in self._codes_of(text))

    def encode(self, text):
        w = _BitWriter()
        for code in self._codes_of(text):
            w.write(code)
        w.write(self.codes[self.END])
        return w.getvalue()[0]

    def decode(self, data):
        code = ""
        out = []
        for bit in "".join(f"{b:08b}" for b in data):
            code += bit
            sym = self.decode_table.get(code)
            if sym is None:
                continue
            if sym == self.END:
                return "".join(out)
            out.append(chr(sym))
            code = ""
        raise ValueError("huffman2021 bitstream ended before the end symbol.")


def nayuki_code_lengths(frequencies: list[int]) -> list[int]:
    """Code lengths of Nayuki's `FrequencyTable.build_code_tree`: leaves for the symbols that occur (padded
    with unused ones to two), the two lowest (frequency, lowest symbol) merged until one tree is left; a
    symbol's length is its depth, 0 for a symbol with no code."""
    heap = [(f, s, (s,)) for s, f in enumerate(frequencies) if f > 0]
    for s, f in enumerate(frequencies):
        if len(heap) >= 2:
            break
        if f == 0:
            heap.append((f, s, (s,)))
    heapq.heapify(heap)  # (frequency, lowest symbol) never ties: the order is that of sequential pushes
    lengths = [0] * len(frequencies)
    while len(heap) > 1:
        f1, s1, leaves1 = heapq.heappop(heap)
        f2, s2, leaves2 = heapq.heappop(heap)
        for s in leaves1 + leaves2:
            lengths[s] += 1
        heapq.heappush(heap, (f1 + f2, min(s1, s2), leaves1 + leaves2))
    return lengths


class ContextModel(TextCodec):
    """Order-3 character model with fixed-weight interpolation down to order 0, range-coded."""

    name = "context"
    ORDER = 3
    WEIGHTS = (0.55, 0.25, 0.12, 0.08)  # orders 3, 2, 1, 0 (renormalised over contexts seen in training)

    def fit(self, captions):
        alphabet = Counter()
        captions = list(captions)
        for c in captions:
            alphabet.update(c)
        self.symbols = sorted(alphabet) + [ESC, EOS]
        self.index = {s: i for i, s in enumerate(self.symbols)}
        k = len(self.symbols)
        self.tables: list[dict[str, np.ndarray]] = [defaultdict(lambda: np.zeros(k)) for _ in range(self.ORDER + 1)]
        for caption in captions:
            seq = _symbols(caption, self.index)
            for pos, sym in enumerate(seq):
                for order in range(self.ORDER + 1):
                    if pos >= order:
                        ctx = "".join(seq[pos - order:pos]) if order else ""
                        self.tables[order][ctx][self.index[sym]] += 1
        self.tables = [dict(t) for t in self.tables]
        self.tables[0].setdefault("", np.zeros(k))
        self.tables[0][""] += 0.5  # every symbol, ESC included, keeps a non-zero probability
        self._cache: dict[str, np.ndarray] = {}
        return self

    def table(self):
        return json.dumps({"order": self.ORDER, "weights": self.WEIGHTS, "symbols": self.symbols,
                           "tables": [{c: v.tolist() for c, v in sorted(t.items())} for t in self.tables]},
                          ensure_ascii=False).encode("utf-8")

    def probabilities(self, history: list[str]) -> np.ndarray:
        key = "".join(history[-self.ORDER:])
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        mix = np.zeros(len(self.symbols))
        total_weight = 0.0
        for order in range(self.ORDER, -1, -1):
            if len(history) < order:
                continue
            counts = self.tables[order].get("".join(history[len(history) - order:]) if order else "")
            if counts is None:
                continue
            w = self.WEIGHTS[self.ORDER - order]
            mix += w * counts / counts.sum()
            total_weight += w
        probs = mix / total_weight
        self._cache[key] = probs
        return probs

    def encode(self, text):
        import constriction

        enc = constriction.stream.queue.RangeEncoder()
        byte_model = constriction.stream.model.Categorical(np.full(256, 1 / 256), perfect=False)
        history: list[str] = []
        for ch in [*text, EOS]:
            sym = ch if ch == EOS or ch in self.index else ESC
            enc.encode(self.index[sym], constriction.stream.model.Categorical(self.probabilities(history),
                                                                              perfect=False))
            if sym == ESC:
                raw = ch.encode("utf-8")
                enc.encode(np.frombuffer(raw, np.uint8).astype(np.int32), byte_model)
            history.append(sym)
        data = enc.get_compressed().astype(">u4").tobytes()
        return data.rstrip(b"\x00")  # the decoder pads the words back with zeros

    def decode(self, data):
        import constriction

        padded = data + b"\x00" * (-len(data) % 4)
        words = np.frombuffer(padded, ">u4").astype(np.uint32)
        if len(words) == 0:
            words = np.zeros(1, np.uint32)
        dec = constriction.stream.queue.RangeDecoder(words)
        byte_model = constriction.stream.model.Categorical(np.full(256, 1 / 256), perfect=False)
        history: list[str] = []
        out = []
        for _ in range(1 << 20):
            sym = self.symbols[int(dec.decode(constriction.stream.model.Categorical(self.probabilities(history),
                                                                                    perfect=False)))]
            if sym == EOS:
                return "".join(out)
            if sym == ESC:
                first = int(dec.decode(byte_model))
                n = 1 if first < 0x80 else 2 if first >> 5 == 0b110 else 3 if first >> 4 == 0b1110 else 4
                rest = [int(dec.decode(byte_model)) for _ in range(n - 1)]
                out.append(bytes([first, *rest]).decode("utf-8"))
            else:
                out.append(sym)
            history.append(sym)
        raise ValueError("context-coded caption has no end-of-caption symbol.")


TEXT_CODECS = {c.name: c for c in (Huffman, Huffman2021, ContextModel, UTF8, Zlib, Brotli, Zstd)}


def make_text_codec(name: str, training_captions: Iterable[str]) -> TextCodec:
    if name not in TEXT_CODECS:
        raise ValueError(f"Unknown text codec {name!r}: use one of {', '.join(TEXT_CODECS)}.")
    return TEXT_CODECS[name]().fit(training_captions)
