"""CMC as its authors released it: their vocabulary and captioner files, loaded through cmcbench's own code."""

import pickle

import pytest
import torch

from baselines import cmc2021
from sat_weights import save_captioner, test_images, vocabulary_lists, write_vocabulary

# Produced once by the authors' own code (smallflyingpig/cross_modal_compression 639e7f6: ImageText/models.py's
# Encoder and DecoderWithAttention loading the file save_captioner writes, their load_checkpoint (strict), and
# the beam search of ImageText/end_to_end_test.py's evaluate, beam 4) on test_images(3), their ToTensor and
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
        assert captioner.caption(test_images(3)) == AUTHORS_CAPTIONS
    ids = captioner.caption_ids(test_images(3)[:1])[0]
    vocab = captioner.vocabulary
    assert ids[0] == vocab.wordtoix["<start>"] and ids[-1] == vocab.wordtoix["<end>"]
    assert [vocab.ixtoword[i] for i in ids[1:-1]] == AUTHORS_CAPTIONS[0].split()
    # each image alone gives what it gave in the batch
    assert [captioner.caption([im])[0] for im in test_images(3)] == AUTHORS_CAPTIONS


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
