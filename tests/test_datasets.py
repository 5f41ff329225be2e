import json
import pickle

import numpy as np
import pytest
from PIL import Image

from benchmark.data.datasets import open_dataset
from benchmark.data.preprocess import attngan_bbox_crop, get_preset


def test_sample_set_is_deterministic_with_split():
    test, train = open_dataset("sample"), open_dataset("sample", "train")
    assert len(test) == 16 and len(train) == 32
    assert not {r.image_id for r in test.records} & {r.image_id for r in train.records}
    a = test.read(test.records[3]).pixels
    b = open_dataset("sample").read(open_dataset("sample").records[3]).pixels
    assert a.shape == (256, 256, 3) and np.array_equal(a, b)
    assert all(len(r.captions) == 5 for r in test.records)
    assert test.fingerprint() == open_dataset("sample").fingerprint() != train.fingerprint()
    assert len(open_dataset("sample:300")) == 100


def test_folder_with_sidecar_captions(tmp_path):
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "b.png")
    Image.new("RGB", (32, 32)).save(tmp_path / "sub" / "a.jpg")
    (tmp_path / "b.txt").write_text("a black square\n\nanother caption\n")
    (tmp_path / "notes.md").write_text("ignored")
    ds = open_dataset(str(tmp_path))
    assert [r.image_id for r in ds.records] == ["b.png", "sub/a.jpg"]
    assert ds.records[0].captions == ("a black square", "another caption") and ds.records[1].captions == ()


def _fake_cub(root):
    cub = root / "CUB_200_2011"
    names = ["001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111",
             "001.Black_footed_Albatross/Black_Footed_Albatross_0002_55",
             "002.Laysan_Albatross/Laysan_Albatross_0003_1033"]
    for n in names:
        (cub / "images" / n).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (200, 150), (90, 90, 90)).save(cub / "images" / f"{n}.jpg")
        (root / "text" / n).parent.mkdir(parents=True, exist_ok=True)
        (root / "text" / f"{n}.txt").write_text("\n".join(f"bird {n[-4:]} caption {k}" for k in range(10)) + "\n")
    (cub / "images.txt").write_text("".join(f"{i + 1} {n}.jpg\n" for i, n in enumerate(names)))
    (cub / "bounding_boxes.txt").write_text("1 60.0 27.0 80.0 60.0\n2 0 0 200 150\n3 10 10 30 40\n")
    (cub / "train_test_split.txt").write_text("1 1\n2 0\n3 0\n")
    for split, subset in (("train", names[:2]), ("test", names[2:])):
        (root / split).mkdir()
        with open(root / split / "filenames.pickle", "wb") as f:
            pickle.dump(subset, f, protocol=2)
    return names


def test_cub_layout_splits_captions_and_crop(tmp_path):
    names = _fake_cub(tmp_path)
    test = open_dataset(f"cub:{tmp_path}")
    assert [r.image_id for r in test.records] == [names[2]]
    assert len(test.records[0].captions) == 10 and test.records[0].bbox == (10, 10, 30, 40)
    assert [r.image_id for r in open_dataset(f"cub:{tmp_path}", "official-test").records] == names[1:]
    assert [r.label for r in open_dataset(f"cub:{tmp_path}", "official-test").records] == [0, 1]
    assert test.classes == ("Black footed Albatross", "Laysan Albatross") and test.records[0].label == 1
    (tmp_path / "CUB_200_2011" / "classes.txt").write_text("1 001.Black_footed_Albatross\n2 002.Laysan_Albatross\n"
                                                           "3 003.Sooty_Albatross\n")
    assert open_dataset(f"cub:{tmp_path}").classes[2] == "Sooty Albatross"  # every class, not only those present
    train = open_dataset(f"cub:{tmp_path}", "train")
    rec = train.records[0]
    # AttnGAN: r = int(max(80, 60) * 0.75) = 60, centre (100, 57) -> crop x 40..160, y 0..117
    pixels = train.read(rec).pixels
    assert attngan_bbox_crop(pixels, rec.bbox).shape == (117, 120, 3)
    out = get_preset("cmc2021")[1](pixels, rec)
    assert out.shape == (256, 256, 3)
    with pytest.raises(ValueError, match="CUB splits"):
        open_dataset(f"cub:{tmp_path}", "val")


def test_coco_layout(tmp_path):
    (tmp_path / "val2014").mkdir()
    (tmp_path / "annotations").mkdir()
    images = [{"id": 42, "file_name": "COCO_val2014_000000000042.jpg"},
              {"id": 7, "file_name": "COCO_val2014_000000000007.jpg"}]
    for im in images:
        Image.new("RGB", (64, 48)).save(tmp_path / "val2014" / im["file_name"])
    anns = [{"image_id": 42, "id": 1, "caption": "A dog. "}, {"image_id": 42, "id": 2, "caption": "a puppy"},
            {"image_id": 7, "id": 3, "caption": "a cat"}]
    (tmp_path / "annotations" / "captions_val2014.json").write_text(json.dumps({"images": images,
                                                                                "annotations": anns}))
    ds = open_dataset(f"coco:{tmp_path}")
    assert [r.image_id for r in ds.records] == ["COCO_val2014_000000000007", "COCO_val2014_000000000042"]
    assert ds.records[1].captions == ("A dog.", "a puppy")
    assert get_preset("cmc2021")[1](ds.read(ds.records[0]).pixels, ds.records[0]).shape == (256, 256, 3)
    with pytest.raises(ValueError, match="captions_train2014.json is missing"):
        open_dataset(f"coco:{tmp_path}", "train")


def test_a_preprocessing_that_would_fail_every_image_is_one_sentence_before_any_work(tmp_path, capsys):
    """--preprocess resize-0 failed every row as it read its image ('height and width must be > 0')."""
    from benchmark.cli import main

    with pytest.raises(ValueError, match=r"^Preprocessing 'resize-0': resize-N takes a side of at least 1 pixel"):
        get_preset("resize-0")
    assert get_preset("resize-1")[0] == "resized to 1x1 (bicubic)"
    assert main(["run", "--codec", "jpeg quality=50", "--metrics", "none", "--lpips", "none", "--caption-embedder",
                 "none", "--no-progress", "--no-plots", "--preprocess", "resize-0", "--out", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith("error: Preprocessing 'resize-0'")
    assert not any(tmp_path.iterdir())  # no run folder left behind
