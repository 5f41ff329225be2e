"""CMC as its authors released it: their vocabulary and captioner files, loaded through cmcbench's own code."""

import base64
import hashlib
import json
import pathlib
import pickle

import numpy as np
import pytest
import torch

import attngan_weights
from baselines import cmc2021
from sat_weights import captioner_images, save_captioner, vocabulary_lists, write_vocabulary

# Produced once by the authors' own code (smallflyingpig/cross_modal_compression 639e7f6: ImageText/models.py's
# Encoder and DecoderWithAttention loading the file save_captioner writes, their load_checkpoint (strict), and
# the beam search of ImageText/end_to_end_test.py's evaluate, beam 4) on captioner_images(3), their ToTensor and
# Normalize; with three mechanical fixes for today's torch: no .cuda(), `//` for their integer `/`, and the
# HEAD encoder's (features, class scores) tuple indexed.
AUTHORS_CAPTIONS = [
    "this this belly wings wings wings wings wings wings is is",
    "this this belly wings wings wings wings wings wings wings wings wings wings wings wings wings is is",
    "this this wings wings wings wings wings wings wings wings wings wings wings wings is",
]


@pytest.fixture(scope="module")
def authors_files(tmp_path_factory):
    """The vocabulary and two checkpoints of the authors' layout: the repository's HEAD (with its cls_linear
    head) and the paper's (without)."""
    folder = tmp_path_factory.mktemp("cmc2021")
    write_vocabulary(folder / "captions.textimage.pickle")
    size = len(vocabulary_lists()[0])
    for name, classes in (("model_head.pickle", 200), ("model_paper.pickle", 0)):
        save_captioner(folder / name, *cmc2021.build_captioner(size, classes))
    return folder


def test_captions_equal_the_authors_beam_search_token_for_token(authors_files):
    for name in ("model_head.pickle", "model_paper.pickle"):  # the class head changes no caption
        captioner = cmc2021.load_captioner(authors_files / name, authors_files / "captions.textimage.pickle")
        assert captioner.caption(captioner_images(3)) == AUTHORS_CAPTIONS
    ids = captioner.caption_ids(captioner_images(3)[:1])[0]
    vocab = captioner.vocabulary
    assert ids[0] == vocab.wordtoix["<start>"] and ids[-1] == vocab.wordtoix["<end>"]
    assert [vocab.ixtoword[i] for i in ids[1:-1]] == AUTHORS_CAPTIONS[0].split()
    assert captioner.caption([captioner_images(3)[1]]) == AUTHORS_CAPTIONS[1:2]  # alone as in the batch


# The authors' beam search (the same evaluate, same fixes) over sat_weights.ScriptedDecoder(seed); None: their
# code stops with an error there (no beam ends within 50 steps).
AUTHORS_SCRIPTED = {14: "and brown tail bird", 123: "white the", 0: "", 1: None, 2: "this beak large", 3: "black this"}


def test_the_beam_search_takes_beam_size_candidates_every_step_as_the_authors():
    """Seeds 14 and 123 tell the authors' rule from the tutorial's (one candidate per live beam)."""
    from sat_weights import ScriptedDecoder

    ixtoword, wordtoix = vocabulary_lists()
    vocab = cmc2021.Vocabulary(ixtoword, wordtoix)
    for seed, expected in AUTHORS_SCRIPTED.items():
        decoder = ScriptedDecoder(len(ixtoword), wordtoix["<end>"], seed)
        ids = cmc2021.Captioner(decoder, decoder, vocab).beam_search(torch.zeros(1, 1, 4), 4)
        if expected is None:  # the best live beam, after their 50 steps
            assert ids[-1] != wordtoix["<end>"] and len(ids) == cmc2021.MAX_STEPS + 2
        else:
            assert vocab.words(ids) == expected and ids[-1] == wordtoix["<end>"]


def test_a_vocabulary_pickle_that_would_run_code_is_refused_unrun(tmp_path):
    target = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(target), "w"))

    path = tmp_path / "captions.textimage.pickle"
    ixtoword, wordtoix = vocabulary_lists()
    path.write_bytes(pickle.dumps([[], [], ixtoword, {**wordtoix, "x": Payload()}], protocol=2))
    with pytest.raises(ValueError, match=r"not a plain vocabulary pickle: it asks to load (builtins|io)\.open"):
        cmc2021.load_vocabulary(path)
    assert not target.exists()
    write_vocabulary(path)
    assert cmc2021.load_vocabulary(path).wordtoix == wordtoix
    path.write_bytes(pickle.dumps([[], [], {0: "<pad>", 1: "bird"}, {"<pad>": 0, "bird": 1}], protocol=2))
    with pytest.raises(ValueError, match="lacks <unk>, <start>, <end>"):
        cmc2021.load_vocabulary(path)
    wordmap = tmp_path / "WORDMAP_coco_5_cap_per_img_5_min_word_freq.json"  # their COCO code's word map
    wordmap.write_text(json.dumps(wordtoix))
    assert cmc2021.load_vocabulary(wordmap).ixtoword == ixtoword


def test_tutorial_and_mismatched_checkpoints_get_one_sentence(authors_files, tmp_path):
    vocab = authors_files / "captions.textimage.pickle"
    encoder, decoder = cmc2021.build_captioner(len(vocabulary_lists()[0]))
    tutorial = tmp_path / "BEST_checkpoint_birds.pth.tar"
    torch.save({"epoch": 3, "encoder": torch.nn.Linear(2, 2), "decoder": torch.nn.Linear(2, 2)}, tutorial)  # modules
    with pytest.raises(ValueError, match=r"pickled modules .* torch.save\(\{'encoder': encoder.state_dict\(\)"):
        cmc2021.load_captioner(tutorial, vocab)
    other = tmp_path / "model_other_vocab.pickle"
    _, small_decoder = cmc2021.build_captioner(10)
    torch.save({"encoder": {}, "decoder": small_decoder.state_dict()}, other)
    with pytest.raises(ValueError, match="encoder lacks resnet.0.weight"):
        cmc2021.load_captioner(other, vocab)
    torch.save({"encoder": encoder.state_dict(), "decoder": small_decoder.state_dict()}, other)
    with pytest.raises(ValueError, match=r"decoder has embedding.weight of shape \(10, 512\), not \(26, 512\) "
                                         r"\(is the vocabulary the checkpoint's\?\)"):
        cmc2021.load_captioner(other, vocab)


# The authors' generator's images (sha256, sum, a 16 x 16 crop at 120:136), produced once by their code
# (TextImage/model.py and GlobalAttention.py, their gen_example tokens and padding) on the seeded files below
# with given z and eps; `batch`: the four captions as one of their batches (sorted, padded, their mask
# arithmetic), `alone`: each caption in a batch of one. Where produced, ours equalled them exactly.
AUTHORS_IMAGES = json.loads((pathlib.Path(__file__).parent / "cmc2021_authors_images.json").read_text())


def _matches_the_authors(image: np.ndarray, expected: dict) -> None:
    """Equal, or at most 0.1% of the crop's values one grey level off (float summation order) and the
    image's sum within that much too."""
    if hashlib.sha256(image.tobytes()).hexdigest() == expected["sha256"]:
        return
    crop = np.frombuffer(base64.b64decode(expected["crop"]), np.uint8).reshape(16, 16, 3).astype(int)
    off = np.abs(image[120:136, 120:136].astype(int) - crop)
    assert off.max() <= 1 and (off > 0).mean() <= 0.001, (off.max(), (off > 0).mean())
    assert abs(int(image.astype(np.int64).sum()) - expected["sum"]) <= 0.001 * image.size


@pytest.fixture(scope="module")
def generator_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("attngan")
    write_vocabulary(folder / "captions.textimage.pickle")
    encoder, generator = cmc2021.build_generator(len(vocabulary_lists()[0]), cmc2021.ATTNGAN_SHAPES["birds"])
    attngan_weights.save_generator(folder, encoder, generator)
    return folder


def _generator(folder):
    return cmc2021.load_generator(folder / "netG_epoch_600.pth", folder / "text_encoder200.pth",
                                  folder / "captions.textimage.pickle")


def test_generated_images_equal_the_authors(generator_files):
    generator = _generator(generator_files)
    order = AUTHORS_IMAGES["order"]
    texts = [attngan_weights.CAPTIONS[i] for i in order]
    z, eps = attngan_weights.noise(len(texts))
    published = generator.generate(texts, z, eps, as_published=True)
    alone = generator.generate(texts, z, eps)
    for image, expected in zip(published, AUTHORS_IMAGES["batch"]):
        assert image.shape == (256, 256, 3) and image.dtype == np.uint8
        _matches_the_authors(image, expected)
    for image, expected in zip(alone, AUTHORS_IMAGES["alone"]):
        _matches_the_authors(image, expected)
    # the authors' batch masks each caption's words with other captions' padding: not the image alone
    assert all(np.abs(p.astype(int) - a.astype(int)).max() > 8 for p, a in zip(published, alone))


def test_a_captions_image_is_the_same_alone_or_among_eight(generator_files):
    generator = _generator(generator_files)
    texts = attngan_weights.CAPTIONS + ["a red bird", "this bird has wings", "a black crown", "long tail"]
    together = generator.generate(texts, seed=3)
    assert [(generator.generate([t], seed=3)[0] == image).all() for t, image in zip(texts, together)] == [True] * 8
    assert not (together[0] == generator.generate(texts[:1], seed=4)[0]).all()  # the seed is used
    assert not (together[0] == together[1]).all()


def test_a_generator_of_the_other_dataset_or_vocabulary_gets_one_sentence(generator_files, tmp_path):
    encoder, coco = cmc2021.build_generator(len(vocabulary_lists()[0]), cmc2021.ATTNGAN_SHAPES["coco"])
    torch.save(coco.state_dict(), tmp_path / "coco_AttnGAN2.pth")
    with pytest.raises(ValueError, match=r"birds generator .*coco_AttnGAN2.pth has an unknown h_net2.* \(a generator "
                                         r"of the other dataset\? birds and COCO differ in size\)"):
        cmc2021.load_generator(tmp_path / "coco_AttnGAN2.pth", generator_files / "text_encoder200.pth",
                               generator_files / "captions.textimage.pickle")
    small, _ = cmc2021.build_generator(10, cmc2021.ATTNGAN_SHAPES["birds"])
    torch.save(small.state_dict(), tmp_path / "text_encoder200.pth")
    with pytest.raises(ValueError, match=r"text encoder .* has encoder.weight of shape \(10, 300\), not \(26, 300\) "
                                         r"\(is the vocabulary the checkpoint's\?\)"):
        cmc2021.load_generator(generator_files / "netG_epoch_600.pth", tmp_path / "text_encoder200.pth",
                               generator_files / "captions.textimage.pickle")


def _release(folder: pathlib.Path) -> pathlib.Path:
    """A folder laid out as the authors' release: captioner, generator, text encoder, vocabulary."""
    folder.mkdir()
    write_vocabulary(folder / "captions.textimage.pickle")
    size = len(vocabulary_lists()[0])
    save_captioner(folder / "model_100.pickle", *cmc2021.build_captioner(size, 200))
    attngan_weights.save_generator(folder, *cmc2021.build_generator(size, cmc2021.ATTNGAN_SHAPES["birds"]))
    return folder


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return _release(tmp_path_factory.mktemp("cmc2021-release") / "release")


def test_cmc2021_runs_end_to_end_on_a_cub_tree(tmp_path, capsys, random_inception_weights, release):
    import pandas as pd

    from sat_weights import WORDS
    from test_datasets import _fake_cub
    from test_named_datasets import run_cli

    tree = tmp_path / "birds"
    names = _fake_cub(tree)
    for name in names:  # captions in the captioner's words, so the authors' coder has a codeword for each letter
        (tree / "text" / f"{name}.txt").write_text("\n".join(" ".join(WORDS[k:] + WORDS[:k]) for k in range(10)))
    weights = release
    rc, out, err = run_cli(["run", "--dataset", f"cub:{tree}", "--protocol", "cmc2021", "--codec",
                            f"cmc2021 weights={weights} max_words=4,64", "--codec", "jpeg quality=50",
                            "--inception-weights", str(random_inception_weights), "--out", str(tmp_path / "runs"),
                            "--name", "r", "--no-plots", "--no-progress"], capsys)
    assert rc == 0, err
    rows = pd.read_parquet(tmp_path / "runs" / "r" / "images")
    cmc = rows[rows.codec == "cmc2021"].sort_values("setting_index")
    assert (rows.status == "ok").all() and len(cmc) == 2
    caption = cmc2021.load_captioner(weights / "model_100.pickle", weights / "captions.textimage.pickle").caption(
        [np.asarray(open_preprocessed(tree, names[2]))])[0]
    assert cmc.caption.tolist() == [" ".join(caption.split()[:4]), caption]
    assert (cmc.bpp > cmc.bpp_published).all() and cmc.bpp_published.notna().all()
    assert cmc[["psnr", "ipd", "caption_bleu4"]].notna().all().all()
    info = json.loads((tmp_path / "runs" / "r" / "config.json").read_text())
    codec = next(c for c in info["codecs"] if c["label"] == "cmc2021")
    assert codec["options"]["captioner"] == f"sat:{weights / 'model_100.pickle'}"
    assert codec["side_information"]["text_codec"] == "huffman2021"
    assert codec["side_information"]["captioner"]["cmc2021 sat"]["checkpoint"]["sha256"]
    summary = pd.read_parquet(tmp_path / "runs" / "r" / "summary.parquet")
    assert {"fid", "kid", "inception_score", "bpp_published"} <= set(summary.columns)


def open_preprocessed(tree, name):
    """The test image as the cmc2021 protocol gives it to the codec."""
    from benchmark.data.datasets import open_dataset
    from benchmark.data.preprocess import get_preset

    dataset = open_dataset(f"cub:{tree}")
    record = next(r for r in dataset.records if r.image_id == name)
    return get_preset("cmc2021")[1](dataset.read(record).pixels, record)


def test_a_release_folder_or_spec_that_does_not_fit_is_told_before_any_work(tmp_path, capsys, release):
    from test_named_datasets import run_cli

    weights = tmp_path / "release"  # the release without its captioner (the tutorial's file name instead)
    weights.mkdir()
    for f in release.iterdir():
        (weights / ("BEST_checkpoint.pth.tar" if f.name == "model_100.pickle" else f.name)).symlink_to(f)
    rc, _, err = run_cli(["run", "--dataset", "sample", "--codec", f"cmc2021 weights={weights}", "--out",
                          str(tmp_path / "runs"), "--no-progress"], capsys)
    assert rc != 0 and "no captioner file (model_*.pickle); name it with captioner=sat:FILE." in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
    rc, _, err = run_cli(["run", "--dataset", "sample", "--codec", f"cmc generator=attngan:{weights / 'x.pth'}",
                          "--out", str(tmp_path / "runs"), "--no-progress"], capsys)
    assert rc != 0 and "vocabulary=FILE" in err
    coco = tmp_path / "coco_AttnGAN2.pth"
    torch.save(cmc2021.build_generator(len(vocabulary_lists()[0]), cmc2021.ATTNGAN_SHAPES["coco"])[1].state_dict(),
               coco)
    from test_datasets import _fake_cub

    _fake_cub(tmp_path / "birds")
    rc, _, err = run_cli(["run", "--dataset", f"cub:{tmp_path / 'birds'}", "--codec",
                          f"cmc generator=attngan:{coco} text_encoder={weights / 'text_encoder200.pth'} "
                          f"vocabulary={weights / 'captions.textimage.pickle'}", "--out", str(tmp_path / "runs"),
                          "--no-progress"], capsys)
    assert rc != 0 and "is AttnGAN's coco model (by its sizes), but the dataset cub:" in err and "is birds" in err
