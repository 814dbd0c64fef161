"""Dataset loaders, pipeline and data.verify, on fake trees written in tmp_path (see conftest.py).

Masks are four 12-column bands of known stored values; the tests check the mapped values by hand.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from segkit import data
from segkit.data import camvid, cityscapes, folder, pets, stanford, voc
from segkit.data.common import IGNORE, explain_data_error
from segkit.data.pipeline import augment, prepare
from segkit.errors import UserError
from tests.conftest import H, W, bands, noise_image, run_verify, save, save_gray, save_palette, save_regions

BAND = H * (W // 4)  # pixels in one band


def examples(ds):
    return [(image, mask) for image, mask in ds.as_numpy_iterator()]


def data_error(ds, info) -> str:
    """The one-line explanation of the error that iterating `ds` raises."""
    with pytest.raises(tf.errors.OpError) as caught:
        for _ in ds:
            pass
    message = explain_data_error(caught.value, info)
    assert message is not None, str(caught.value)[:500]
    return message


def check_contract(image, mask):
    assert image.dtype == np.float32 and image.shape == (H, W, 3)
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert mask.dtype == np.int32 and mask.shape == (H, W)


# ---------------------------------------------------------------------------
# Registry


def test_registry_has_every_dataset():
    assert set(data.DATASETS) >= {"camvid", "sample", "shapes", "voc", "cityscapes", "stanford", "pets", "folder"}


def test_unknown_dataset_lists_choices():
    with pytest.raises(UserError, match=r"unknown dataset 'kitti'; choose from \[.*'cityscapes'.*'voc'\]"):
        data.load_dataset("kitti", "/nowhere")


# ---------------------------------------------------------------------------
# Decoding and label mapping, one layout at a time


def test_camvid_segnet_values(trees):
    ds, info = camvid.load(trees.camvid_segnet(), "train")
    got = examples(ds)
    assert len(got) == 2 and info.num_classes == 11
    for k, (image, mask) in enumerate(got):
        check_contract(image, mask)
        np.testing.assert_array_equal(np.round(image * 255).astype(np.uint8), noise_image(k))  # PNG is lossless
        # 11 (Unlabelled) -> ignore
        np.testing.assert_array_equal(mask, bands([0, 3, 10, IGNORE]))


def test_camvid_test_split_and_splits(trees):
    root = trees.camvid_segnet()
    assert camvid.splits(root) == ["test", "train", "val"]
    ds, info = camvid.load(root, "test")
    assert len(examples(ds)) == 3 and [p[0].name for p in info.files] == ["d.png", "e.png", "f.png"]


def write_sequences(root, layout):
    """A SegNet-layout CamVid tree whose frames carry sequence prefixes, as the real ones do."""
    for split, names in layout.items():
        lines = []
        for k, name in enumerate(names):
            save(root / split / f"{name}.png", noise_image(k))
            save_gray(root / f"{split}annot" / f"{name}.png", bands([0, 3, 10, 11]))
            lines.append(f"{split}/{name}.png {split}annot/{name}.png")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_camvid_holdout_folds_train_and_val_by_sequence(tmp_path):
    root = write_sequences(tmp_path / "CamVid", {"train": ["0001TP_1", "0006R0_1", "0016E5_1", "0016E5_2"],
                                                  "val": ["0016E5_3"], "test": ["Seq05VD_1"]})
    names = lambda split, **options: [p[0].name for p in data.load_dataset("camvid", root, split, **options)[1].files]
    # The sequence option arrives as a string from --data-option: "0016E5" must not be read as 1.6e6.
    assert data.coerce_options("camvid", {"holdout": "0016E5"}) == {"holdout": "0016E5"}
    assert names("train", holdout="0006R0") == ["0001TP_1.png", "0016E5_1.png", "0016E5_2.png", "0016E5_3.png"]
    assert names("val", holdout="0006R0") == ["0006R0_1.png"]
    assert names("val", holdout="0001TP,0006R0") == ["0001TP_1.png", "0006R0_1.png"]
    assert names("test", holdout="0006R0") == ["Seq05VD_1.png"]  # test is never part of a fold
    pool = sorted(names("train") + names("val"))
    assert sorted(names("train+val", holdout="0016E5")) == pool  # the two halves of a fold are the pool
    assert len(examples(data.load_dataset("camvid", root, "val", holdout="0016E5")[0])) == 3
    with pytest.raises(UserError, match=r"holdout sequence 'Seq05VD' is in neither train nor val "
                                        r"\(their sequences: 0001TP, 0006R0, 0016E5\)"):
        data.load_dataset("camvid", root, "val", holdout="Seq05VD")
    with pytest.raises(UserError, match="leaves no frames to train on"):
        data.load_dataset("camvid", root, "train", holdout="0001TP,0006R0,0016E5")


@pytest.mark.parametrize("name, options, expected", [
    ("folder", {"remap": "no", "binary": "1", "num_classes": "3", "val_fraction": "0.1"},
     {"remap": False, "binary": True, "num_classes": 3, "val_fraction": 0.1}),
    ("voc", {"aug": "YES", "cache": "none"}, {"aug": True, "cache": None}),
    ("camvid", {"cache": False, "holdout": "0001TP"}, {"cache": False, "holdout": "0001TP"}),
])
def test_data_options_are_read_as_the_loader_declares(name, options, expected):
    assert data.coerce_options(name, options) == expected


@pytest.mark.parametrize("name, options, message", [
    ("folder", {"remap": "maybe"}, "remap='maybe' must be true or false"),
    ("camvid", {"cache": "maybe"}, "cache='maybe' must be true or false"),
    ("camvid", {"cache": 1}, "cache=1 must be true or false"),  # a JSON number is not a boolean
    ("folder", {"num_classes": "3.5"}, "num_classes='3.5' must be an integer"),
    ("folder", {"num_classes": "1e30"}, "num_classes='1e30' must be an integer"),
    ("folder", {"val_fraction": "nan"}, "val_fraction='nan' must be a number"),
    ("camvid", {"holdout": 5}, "holdout=5 must be a string"),
    ("camvid", {"cache": "none"}, "cache='none' cannot be none"),
    ("camvid", {"colour": "x"}, "unknown data option 'colour'; its loader takes: cache, holdout"),
])
def test_bad_data_options_are_refused_in_one_line(name, options, message):
    with pytest.raises(UserError, match=re.escape(message)):
        data.coerce_options(name, options)


def test_camvid_colour_values(trees):
    ds, info = camvid.load(trees.camvid_colour(), "train")
    assert info.class_names == ("Sky", "Road", "Car")
    for image, mask in examples(ds):
        check_contract(image, mask)
        # Road (128, 64, 128) -> its csv index 1, Void -> ignore, Sky -> 0, Car -> 2
        np.testing.assert_array_equal(mask, bands([1, IGNORE, 0, 2]))


def test_voc_palette_indices_and_split_order(trees):
    ds, info = voc.load(trees.voc(), "train")
    assert info.num_classes == 21 and info.colors[15] == (192, 128, 128)  # person in the VOC palette
    assert [p[0].stem for p in info.files] == ["2007_000003", "2007_000001"]  # train.txt order, 2 of 3
    got = examples(ds)
    assert len(got) == 2
    for image, mask in got:
        check_contract(image, mask)
        np.testing.assert_array_equal(mask, bands([0, 15, IGNORE, 20]))


def test_voc_palette_png_really_expands_in_tensorflow(tmp_path):
    # Why voc reads with PIL: TensorFlow's decoder gives the palette colours, not the indices.
    path = save_palette(tmp_path / "m.png", bands([0, 15, 255, 20]))
    assert Image.open(path).mode == "P"
    decoded = tf.io.decode_png(tf.io.read_file(str(path)), channels=1).numpy()[..., 0]
    assert not np.array_equal(decoded, bands([0, 15, 255, 20]))


@pytest.mark.parametrize("where", ["parent", "VOCdevkit", "VOC2012"])
def test_voc_accepts_three_roots(trees, where):
    base = trees.voc()
    data_dir = {"parent": base, "VOCdevkit": base / "VOCdevkit", "VOC2012": base / "VOCdevkit" / "VOC2012"}[where]
    assert voc.splits(data_dir) == ["train", "val"]
    _, info = voc.load(data_dir, "val")
    assert [p[0].stem for p in info.files] == ["2007_000002"]


def test_voc_rgb_mask_is_an_error_naming_the_file(trees):
    ds, info = voc.load(trees.voc(), "val")
    mask_path = info.files[0][1]
    save(mask_path, np.zeros((H, W, 3), np.uint8))  # an RGB image instead of a palette PNG
    message = data_error(ds, info)
    assert str(mask_path) in message and "'RGB'" in message


def test_voc_aug(trees):
    root = trees.voc(aug=True)
    assert voc.splits(root, aug=True) == ["train_aug", "val"]
    ds, info = voc.load(root, "train_aug", aug=True)
    assert [p[0].stem for p in info.files] == ["2007_000002", "2007_000001"]
    assert all(p[1].parent.name == "SegmentationClassAug" for p in info.files)
    for _, mask in examples(ds):
        np.testing.assert_array_equal(mask, bands([1, 2, IGNORE, 0]))


def test_voc_aug_falls_back_to_the_standard_lists(trees):
    root = trees.voc(aug=True)
    for listing in (root / "VOCdevkit" / "VOC2012" / "ImageSets" / "SegmentationAug").iterdir():
        listing.unlink()
    (root / "VOCdevkit" / "VOC2012" / "ImageSets" / "SegmentationAug").rmdir()
    assert voc.splits(root, aug=True) == ["train", "val"]
    ds, info = voc.load(root, "val", aug=True)
    assert info.files[0][1].parent.name == "SegmentationClassAug"
    np.testing.assert_array_equal(examples(ds)[0][1], bands([1, 2, IGNORE, 0]))


def test_voc_aug_without_labels_says_what_is_missing(trees):
    with pytest.raises(UserError, match="SegmentationClassAug"):
        voc.load(trees.voc(), "train", aug=True)


def test_cityscapes_train_ids(trees):
    root = trees.cityscapes()
    assert cityscapes.splits(root) == ["train", "val"]
    ds, info = cityscapes.load(root, "train")
    assert info.num_classes == 19 and info.class_names[13] == "car"
    assert [p[0].parent.name for p in info.files] == ["aachen", "bochum"]
    for image, mask in examples(ds):
        check_contract(image, mask)
        # road 7 -> 0, car 26 -> 13, unlabeled 0 -> ignore, out of roi 3 -> ignore
        np.testing.assert_array_equal(mask, bands([0, 13, IGNORE, IGNORE]))


def test_cityscapes_label_id_above_33_is_an_error(trees):
    ds, info = cityscapes.load(trees.cityscapes(), "val")
    save_gray(info.files[0][1], bands([7, 34, 40, 7]))
    message = data_error(ds, info)
    assert str(info.files[0][1]) in message and "[34 40]" in message


def test_stanford_values_and_fixed_split(trees):
    root = trees.stanford()
    assert stanford.splits(root) == ["train", "val"]
    ds, info = stanford.load(root, "val")
    assert [p[0].stem for p in info.files] == ["0000500"]  # sorted position 4
    _, train = stanford.load(root / "iccv09Data", "train")  # iccv09Data itself works too
    assert [p[0].stem for p in train.files] == ["0000047", "0000051", "0000100", "0000200", "0000600"]
    (image, mask), = examples(ds)
    check_contract(image, mask)
    # -1 (unknown) -> ignore, classes 5, 0, 7 unchanged
    np.testing.assert_array_equal(mask, bands([IGNORE, 5, 0, 7]))


def test_stanford_split_rule():
    assert [stanford.split_of(i) for i in range(10)] == ["train"] * 4 + ["val"] + ["train"] * 4 + ["val"]


@pytest.mark.parametrize("content, expected", [
    ("1 2 3\n4 5\n", "not a grid of integers (rows of 2 to 3 values)"),
    ("1 2 x\n", "not a grid of integers"),
    ("", "not a grid of integers"),
])
def test_stanford_malformed_regions_file_is_named(trees, content, expected):
    ds, info = stanford.load(trees.stanford(), "val")
    info.files[0][1].write_text(content)
    message = data_error(ds, info)
    assert str(info.files[0][1]) in message and expected in message


def test_folder_binary_auto(trees):
    ds, info = folder.load(trees.folder_binary(), "all")
    assert info.class_names == ("background", "foreground")
    for k, (image, mask) in enumerate(examples(ds)):
        check_contract(image, mask)
        np.testing.assert_array_equal(np.round(image * 255).astype(np.uint8), noise_image(k))
        np.testing.assert_array_equal(mask, bands([0, 1, 0, 1]))  # 0/255 -> 0/1


def test_folder_remap_with_class_names(trees):
    ds, info = folder.load(trees.folder_remap(), "all", remap=True)
    assert info.class_names == ("cat", "dog", "bird")
    for _, mask in examples(ds):
        np.testing.assert_array_equal(mask, bands([0, 1, 2, 0]))  # {3, 7, 9} -> {0, 1, 2}


def test_folder_without_remap_counts_classes_from_values(trees):
    root = trees.folder_remap()
    (root / "classes.txt").unlink()
    _, info = folder.load(root, "all")
    assert info.class_names == tuple(f"class{i}" for i in range(10))  # largest value 9 + 1


def test_folder_split_subfolders(trees):
    root = trees.folder_splits()
    assert folder.splits(root) == ["train", "val"]
    ds, info = folder.load(root, "train", num_classes=3)
    assert [p[0].stem for p in info.files] == ["a", "b", "c"] and info.num_classes == 3
    for _, mask in examples(ds):
        np.testing.assert_array_equal(mask, bands([0, 1, 2, IGNORE]))
    with pytest.raises(UserError, match=r"no split 'all' .*found: train, val"):
        folder.load(root, "all")


def test_folder_val_fraction_holds_out_every_kth_image(trees):
    """A flat folder has one split; --val-fraction 0.5 holds out every 2nd image (file-name order) for val."""
    root = trees.folder_binary()  # a.png, b.png
    with pytest.raises(UserError, match="one flat split .*--val-fraction"):
        folder.load(root, "train")
    _, train = folder.load(root, "train", val_fraction=0.5)
    _, val = folder.load(root, "val", val_fraction=0.5)
    assert [p[0].name for p in train.files] == ["a.png"] and [p[0].name for p in val.files] == ["b.png"]
    with pytest.raises(UserError, match="has its own splits"):
        folder.load(trees.folder_splits(), "train", val_fraction=0.5)
    with pytest.raises(UserError, match="val_fraction must be a number between 0 and 1, got 1.5"):
        folder.load(root, "val", val_fraction=1.5)


def test_folder_mismatched_options(trees):
    with pytest.raises(UserError, match="classes.txt names 3 classes but num_classes=4"):
        folder.load(trees.folder_remap(), "all", num_classes=4)
    with pytest.raises(UserError, match="exclude each other"):
        folder.load(trees.folder_binary(), "all", binary=True, remap=True)


def test_folder_image_without_mask_is_named(trees):
    root = trees.folder_binary()
    (root / "masks" / "b.png").unlink()
    with pytest.raises(UserError, match=f"image {root / 'images' / 'b.png'} has no mask"):
        folder.load(root, "all")


# ---------------------------------------------------------------------------
# Oxford-IIIT Pet through tfds' own mocking


def fake_pets(self, split, decoders=None, read_config=None, shuffle_files=False):
    """Stands in for tfds' reader: the random mock gives image and mask different sizes and
    trimap values 0..254, so the examples are made here, with valid trimaps 1, 2, 3."""
    del self, split, decoders, read_config, shuffle_files
    trimap = bands([1, 2, 3, 2]).astype(np.uint8)[..., None]
    return tf.data.Dataset.from_tensor_slices({
        "image": np.stack([noise_image(k) for k in range(3)]),
        "segmentation_mask": np.stack([trimap] * 3),
        "file_name": [f"pet_{k}.jpg" for k in range(3)],
    })


def test_pets_with_mocked_tfds(tmp_path):
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=3, as_dataset_fn=fake_pets):
        ds, info = pets.load(tmp_path, "train")
        got = examples(ds)
    assert info.class_names == ("background", "pet", "border") and len(got) == 3
    for k, (image, mask) in enumerate(got):
        check_contract(image, mask)
        np.testing.assert_array_equal(np.round(image * 255).astype(np.uint8), noise_image(k))
        # trimap 1 (pet) -> 1, 2 (background) -> 0, 3 (border) -> 2
        np.testing.assert_array_equal(mask, bands([1, 0, 2, 0]))


def test_pets_default_mock_runs_the_checks(tmp_path):
    # tfds' plain random mock makes image and mask of unrelated sizes: the size check must catch it.
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=2):
        ds, info = pets.load(tmp_path, "test[:50%]")
        message = data_error(ds, info)
    assert "mask " in message and ("but its image" in message or "trimap values" in message)


def test_pets_not_prepared_and_unknown_split(tmp_path):
    with pytest.raises(UserError, match="oxford_iiit_pet is not prepared in .*tfds build"):
        pets.load(tmp_path, "train")
    with pytest.raises(UserError, match="no split 'validation' .*found: train, val, test"):
        pets.load(tmp_path, "validation")


def test_pets_val_is_held_out_of_train(tmp_path, monkeypatch):
    """train.py's default splits work for pets: val is the last 10% of tfds' train split, train the rest."""
    import tensorflow_datasets as tfds

    asked = []

    def record(name, split, **kwargs):
        asked.append(split)
        raise AssertionError("not prepared")  # tfds' own way of saying so

    monkeypatch.setattr(tfds, "load", record)
    for split in ("train", "val", "test", "train[:50%]", "train+val"):
        with pytest.raises(UserError):
            pets.load(tmp_path, split)
    assert asked == ["train[:90%]", "train[90%:]", "test", "train[:50%]", "train[:90%]+train[90%:]"]


# ---------------------------------------------------------------------------
# Bundled and generated data


def test_sample_loads():
    counts = {}
    for split in ("train", "val"):
        ds, info = data.load_dataset("sample", split=split)
        masks = [mask for _, mask in ds.as_numpy_iterator()]
        counts[split] = len(masks)
        values = np.unique(np.concatenate([np.unique(m) for m in masks]))
        assert info.num_classes == 11 and set(values.tolist()) <= set(range(11)) | {IGNORE}
    assert counts == {"train": 96, "val": 32}


def test_shapes_deterministic():
    first = examples(data.load_dataset("shapes", count=4, image_size=(32, 32), seed=3)[0])
    again = examples(data.load_dataset("shapes", count=4, image_size=(32, 32), seed=3)[0])
    other = examples(data.load_dataset("shapes", count=4, image_size=(32, 32), seed=4)[0])
    for (i1, m1), (i2, m2) in zip(first, again):
        np.testing.assert_array_equal(i1, i2)
        np.testing.assert_array_equal(m1, m2)
        assert set(np.unique(m1).tolist()) <= {0, 1, 2, 3}
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, other))


# ---------------------------------------------------------------------------
# Augmentation keeps image and mask aligned

CLASS_COLOURS = np.array([[0.9, 0.1, 0.1], [0.1, 0.9, 0.1], [0.1, 0.1, 0.9], [0.9, 0.9, 0.2]], np.float32)


def colour_coded_pair():
    """A 32x48 image whose every pixel has the colour of its class (8x8 blocks of classes 0..3)."""
    labels = np.random.default_rng(0).integers(0, 4, (H // 8, W // 8))
    mask = np.kron(labels, np.ones((8, 8), np.int64)).astype(np.int32)
    return CLASS_COLOURS[mask], mask


def test_augment_keeps_image_and_mask_aligned():
    image, mask = colour_coded_pair()
    padded_somewhere = False
    for seed in range(8):
        out_image, out_mask = augment(tf.constant(image), tf.constant(mask), tf.constant([seed, 7], tf.int64),
                                      image_size=(40, 56), scale_range=(0.5, 2.0), jitter=False)
        out_image, out_mask = out_image.numpy(), out_mask.numpy()
        assert out_image.shape == (40, 56, 3) and out_mask.shape == (40, 56)
        # Padding: mask 255 exactly where the image is padded with 0 (no class colour is black).
        black = np.all(out_image == 0.0, axis=-1)
        np.testing.assert_array_equal(black, out_mask == IGNORE)
        padded_somewhere |= bool(black.any())
        # Away from class edges (bilinear blends colours there) the colour is the class colour.
        labelled = np.pad(out_mask, 1, mode="edge")
        windows = np.lib.stride_tricks.sliding_window_view(labelled, (3, 3))
        uniform = np.all(windows == out_mask[..., None, None], axis=(-1, -2)) & (out_mask != IGNORE)
        assert uniform.sum() >= 0.2 * (out_mask != IGNORE).sum()
        np.testing.assert_allclose(out_image[uniform], CLASS_COLOURS[out_mask[uniform]], atol=1e-5)
    assert padded_somewhere  # scales below 40/32 leave room to pad


def test_strong_augment_changes_only_the_colours():
    """--augment strong: the same crop, scale and flip as standard (same mask), values in [0, 1], the same image
    for the same seed, and on average further from the unjittered crop than standard."""
    from segkit.data.pipeline import gaussian_blur

    image, mask = colour_coded_pair()
    change = {"standard": [], "strong": []}
    for seed in range(24):
        key = tf.constant([seed, 3], tf.int64)
        outputs = {s: augment(tf.constant(image), tf.constant(mask), key, image_size=(40, 56), strength=s)
                   for s in change}
        np.testing.assert_array_equal(outputs["strong"][1], outputs["standard"][1])
        strong = outputs["strong"][0].numpy()
        assert 0.0 <= strong.min() and strong.max() <= 1.0
        again = augment(tf.constant(image), tf.constant(mask), key, image_size=(40, 56), strength="strong")[0]
        np.testing.assert_array_equal(strong, again.numpy())
        plain = augment(tf.constant(image), tf.constant(mask), key, image_size=(40, 56), jitter=False)[0].numpy()
        for s in change:
            change[s].append(float(np.mean(np.abs(outputs[s][0].numpy() - plain))))
    assert np.mean(change["strong"]) > 1.3 * np.mean(change["standard"]) > 0
    # "colour" is strong without the blur and noise: where neither was drawn the two are the same image.
    same = 0
    for seed in range(24):
        key = tf.constant([seed, 3], tf.int64)
        strong, colour = (augment(tf.constant(image), tf.constant(mask), key, image_size=(40, 56), strength=s)[0].numpy()
                          for s in ("strong", "colour"))
        assert 0.0 <= colour.min() and colour.max() <= 1.0
        same += np.array_equal(strong, colour)
    assert 0 < same < 24
    # The blur is a normalised Gaussian: a flat image stays flat, a single bright pixel spreads symmetrically.
    flat = tf.fill((9, 9, 3), 0.5)
    np.testing.assert_allclose(gaussian_blur(flat, tf.constant(1.0)).numpy(), 0.5, atol=1e-6)
    dot = np.zeros((9, 9, 3), np.float32)
    dot[4, 4] = 1.0
    blurred = gaussian_blur(tf.constant(dot), tf.constant(1.0)).numpy()[..., 0]
    np.testing.assert_allclose(blurred, blurred.T, atol=1e-7)
    np.testing.assert_allclose(blurred[4, 3] / blurred[4, 4], np.exp(-0.5), rtol=1e-5)


def test_prepare_training_is_seeded():
    image, mask = colour_coded_pair()
    ds = tf.data.Dataset.from_tensor_slices((np.stack([image] * 4), np.stack([mask] * 4)))

    def batch(seed):
        return next(iter(prepare(ds, training=True, batch_size=4, image_size=(24, 40), seed=seed)))

    (i1, m1), (i2, m2), (i3, _) = batch(1), batch(1), batch(2)
    assert i1.shape == (4, 24, 40, 3) and m1.shape == (4, 24, 40) and m1.dtype == tf.int32
    np.testing.assert_array_equal(i1.numpy(), i2.numpy())
    np.testing.assert_array_equal(m1.numpy(), m2.numpy())
    assert not np.array_equal(i1.numpy(), i3.numpy())


# ---------------------------------------------------------------------------
# Bad input: one line that names the thing

LAYOUTS = {  # name -> (tree builder, split, writer of a stored-value mask, a stored value outside the classes)
    "camvid": ("camvid_segnet", "train", save_gray, 12),
    "voc": ("voc", "train", save_palette, 21),
    "cityscapes": ("cityscapes", "train", save_gray, 34),
    "stanford": ("stanford", "train", save_regions, 8),
    "folder": ("folder_splits", "train", save_gray, 5),
}


def load_layout(trees, name):
    builder, split, _, _ = LAYOUTS[name]
    return data.load_dataset(name, getattr(trees, builder)(), split)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_missing_data_dir(tmp_path, name):
    with pytest.raises(UserError, match=f"^{name}: data dir .*nowhere.* does not exist .*expected"):
        data.load_dataset(name, tmp_path / "nowhere")


@pytest.mark.parametrize("name, expected", [("camvid", "SegNet layout"), ("voc", "JPEGImages"),
                                            ("cityscapes", "leftImg8bit"), ("stanford", "iccv09Data"),
                                            ("folder", "images/ and masks/")])
def test_wrongly_laid_out_dir_names_the_layout(tmp_path, name, expected):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(UserError, match=f"^{name}: .*expected .*{expected}") as caught:
        data.load_dataset(name, tmp_path)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_unknown_split_lists_the_found_ones(trees, name):
    builder = getattr(trees, LAYOUTS[name][0])
    with pytest.raises(UserError, match=r"no split 'bogus' in .*\(found: .*train"):
        data.load_dataset(name, builder(), "bogus")


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_corrupt_image_is_named(trees, name):
    ds, info = load_layout(trees, name)
    image_path = info.files[1][0]
    image_path.write_bytes(b"this is not an image")
    message = data_error(ds, info)
    assert str(image_path) in message and "cannot read" in message


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_mask_size_mismatch_is_named(trees, name):
    ds, info = load_layout(trees, name)
    _, _, write, _ = LAYOUTS[name]
    mask_path = info.files[0][1]
    write(mask_path, bands([0, 0, 0, 0], height=H - 2))
    message = data_error(ds, info)
    assert message == f'mask "{mask_path}" is {H - 2}x{W} but its image "{info.files[0][0]}" is {H}x{W}'


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_label_values_outside_the_classes_are_named(trees, name):
    ds, info = load_layout(trees, name)
    _, _, write, bad = LAYOUTS[name]
    mask_path = info.files[0][1]
    write(mask_path, bands([0, bad, 0, bad]))
    message = data_error(ds, info)
    assert str(mask_path) in message and "outside the dataset's classes" in message and f"[{bad}]" in message


def test_camvid_colour_unknown_colour_is_named(trees):
    ds, info = camvid.load(trees.camvid_colour(), "train")
    mask_path = info.files[0][1]
    save(mask_path, np.full((H, W, 3), 7, np.uint8))
    assert data_error(ds, info) == f'mask "{mask_path}" has colours not in the class list (r, g, b): [[7 7 7]]'


# ---------------------------------------------------------------------------
# data.verify


def test_verify_clean_tree_counts_pixels(trees, capsys):
    root = trees.camvid_segnet()
    assert run_verify(["--dataset", "camvid", "--data-dir", str(root), "--split", "train"]) == 0
    out = capsys.readouterr().out
    assert "camvid train: 2 images" in out and "no problems" in out
    counts = {line.split()[0]: int(line.split()[1]) for line in out.splitlines()[2:13]}
    # Two 32x48 masks of bands 0, 3, 10, 11 (ignored): one band per class per image.
    expected = {name: 0 for name in camvid.CLASSES_11}
    expected.update({"Sky": 2 * BAND, "Road": 2 * BAND, "Bicyclist": 2 * BAND})
    assert counts == expected
    assert any(line.split() == ["(ignored)", str(2 * BAND)] for line in out.splitlines())
    # Three classes of equal frequency: median frequency weights 1 for them, 0 for absent ones.
    weights = {line.split()[0]: float(line.split()[3]) for line in out.splitlines()[2:13]}
    assert weights["Sky"] == weights["Road"] == weights["Bicyclist"] == 1.0 and weights["Pole"] == 0.0


def test_verify_reports_every_bad_file(trees, capsys):
    root = trees.camvid_segnet()
    corrupt, mismatched = root / "test" / "d.png", root / "testannot" / "f.png"
    corrupt.write_bytes(b"\x89PNG broken")
    save_gray(mismatched, bands([0, 1, 2, 3], height=H - 4))
    assert run_verify(["--dataset", "camvid", "--data-dir", str(root)]) == 1
    out = capsys.readouterr().out
    assert "camvid train: 2 images" in out and "camvid val: 1 images" in out and "camvid test: 3 images" in out
    problems = [line for line in out.splitlines() if line.strip().startswith("problem:")]
    assert len(problems) == 2
    assert str(corrupt) in problems[0] and "cannot read" in problems[0]
    assert str(mismatched) in problems[1] and f"is {H - 4}x{W}" in problems[1]
    # The good test image is still counted: Sky, Road, Bicyclist one band each.
    test_block = out.split("camvid test:")[1]
    assert any(line.split()[:2] == ["Sky", str(BAND)] for line in test_block.splitlines())


def test_verify_options_and_usage_errors(trees, capsys):
    root = trees.folder_remap()
    assert run_verify(["--dataset", "folder", "--data-dir", str(root), "--data-option", "remap=true"]) == 0
    out = capsys.readouterr().out
    assert any(line.split()[:2] == ["cat", str(4 * BAND)] for line in out.splitlines())  # 2 bands x 2 masks
    assert run_verify(["--dataset", "folder", "--data-dir", str(root), "--split", "bogus"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: folder: no split 'bogus'") and "Traceback" not in err
    assert run_verify(["--dataset", "folder", "--data-dir", str(root), "--data-option", "aug=true"]) == 2
    assert "unknown data option 'aug'" in capsys.readouterr().err
    assert run_verify(["--dataset", "kitti"]) == 2
    assert "invalid choice: 'kitti'" in capsys.readouterr().err


def test_evenly_spaced_indices():
    from segkit.data.common import evenly_spaced

    assert evenly_spaced(101, 4) == {0, 33, 67, 100}
    assert evenly_spaced(3, 5) == {0, 1, 2}
    assert evenly_spaced(-1, 4) == set() and evenly_spaced(10, 0) == set()


def test_training_stream_starts_anywhere():
    """Batch k of the training stream is the same whichever batch it starts at (resumed runs), passes are
    shuffled differently, and the global TensorFlow seed plays no part."""
    import keras

    from segkit.data.pipeline import training_stream

    rng = np.random.default_rng(0)
    ds = tf.data.Dataset.from_tensor_slices((rng.random((10, 8, 8, 3), dtype=np.float32),
                                             np.arange(10, dtype=np.int32)[:, None, None] * np.ones((1, 8, 8), np.int32)))
    keras.utils.set_random_seed(0)
    whole = [b for b in training_stream(ds, batch_size=3, image_size=(8, 8), seed=4).take(7)]
    keras.utils.set_random_seed(123)
    later = [b for b in training_stream(ds, batch_size=3, image_size=(8, 8), seed=4, start_batch=4).take(3)]
    for (i1, m1), (i2, m2) in zip(whole[4:], later):
        np.testing.assert_array_equal(i1.numpy(), i2.numpy())
        np.testing.assert_array_equal(m1.numpy(), m2.numpy())
    # 10 examples make 3 batches a pass; each pass holds 9 different examples, in another order than the last
    plain = training_stream(ds, batch_size=3, image_size=(8, 8), seed=4, augment_data=False).take(6)
    order = [int(m[k, 0, 0]) for _, m in plain for k in range(3)]
    assert len(set(order[:9])) == 9 and len(set(order[9:18])) == 9 and order[:9] != order[9:18]
    other = [b for b in training_stream(ds, batch_size=3, image_size=(8, 8), seed=5).take(1)]
    assert not np.array_equal(other[0][0].numpy(), whole[0][0].numpy())


def test_paste_classes_copies_the_chosen_pixels_from_the_previous_image():
    """Copy-paste: with probability 1 image i takes exactly the chosen classes' pixels (image and label) of
    image i - 1 at the same place; with probability 0 nothing changes; the stream's pasted batches are the
    same whichever batch it starts at, and names are resolved against the dataset's classes."""
    from types import SimpleNamespace

    from segkit.data.pipeline import paste_classes, training_stream
    from segkit.training.splits import paste_option

    rng = np.random.default_rng(1)
    masks = rng.integers(0, 4, (3, 5, 6)).astype(np.int32)
    masks[0, 0, 0] = IGNORE
    images = rng.random((3, 5, 6, 3), dtype=np.float32)
    seed = tf.constant([7, 0], tf.int64)
    out_images, out_masks = (t.numpy() for t in paste_classes(tf.constant(images), tf.constant(masks), (1, 3), 1.0, seed))
    for i in range(3):
        donor = (i - 1) % 3
        take = np.isin(masks[donor], (1, 3))
        np.testing.assert_array_equal(out_masks[i], np.where(take, masks[donor], masks[i]))
        np.testing.assert_array_equal(out_images[i], np.where(take[..., None], images[donor], images[i]))
    same = paste_classes(tf.constant(images), tf.constant(masks), (1, 3), 0.0, seed)
    np.testing.assert_array_equal(same[1].numpy(), masks)
    single = paste_classes(tf.constant(images[:1]), tf.constant(masks[:1]), (1, 3), 1.0, seed)
    np.testing.assert_array_equal(single[1].numpy(), masks[:1])

    ds = tf.data.Dataset.from_tensor_slices((rng.random((9, 8, 8, 3), dtype=np.float32),
                                             rng.integers(0, 4, (9, 8, 8)).astype(np.int32)))
    options = dict(batch_size=3, image_size=(8, 8), seed=2, paste=((2,), 0.5))
    whole = [b for b in training_stream(ds, **options).take(6)]
    later = [b for b in training_stream(ds, start_batch=4, **options).take(2)]
    for (i1, m1), (i2, m2) in zip(whole[4:], later):
        np.testing.assert_array_equal(i1.numpy(), i2.numpy())
        np.testing.assert_array_equal(m1.numpy(), m2.numpy())
    plain = [b for b in training_stream(ds, batch_size=3, image_size=(8, 8), seed=2).take(6)]
    share2 = lambda batches: np.mean([np.mean(m.numpy() == 2) for _, m in batches])
    assert share2(whole) > share2(plain)  # class 2 gained pixels; the other pixels came from the same crops

    info = SimpleNamespace(name="camvid", class_names=["Sky", "Building", "Pole"], num_classes=3)
    config = SimpleNamespace(paste_classes="pole, 1", paste_prob=0.25)
    assert paste_option(config, info) == ((1, 2), 0.25)
    with pytest.raises(UserError, match="'Tree' is not a class of camvid"):
        paste_option(SimpleNamespace(paste_classes="Pole,Tree", paste_prob=0.5), info)
