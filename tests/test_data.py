"""Tests of advinv_jax.data: loaders, derived datasets, batching, tfds route."""
import gzip
import os
import time

import chex
import ml_collections
import numpy as np
import pytest

from advinv_jax import data as D
from advinv_jax.data import _tfds


def _cfg(**kw):
  c = ml_collections.ConfigDict()
  c.name = "digits"
  c.data_dir = ""
  c.pad_to = 0
  c.classes = ()
  c.num_train = 0
  c.num_test = 0
  c.image_size = 0
  c.shift = ml_collections.ConfigDict(dict(
      enabled=False, code_size=4, position=(0, 0), value=1.0,
      construction="code"))
  for k, v in kw.items():
    if k.startswith("shift_"):
      c.shift[k[6:]] = v
    else:
      c[k] = v
  return c


def _all(src):
  return src.get(np.arange(len(src)))


@pytest.fixture(scope="module")
def digits():
  return D.load_dataset(_cfg())


# ------------------------------------------------------------------ digits


def test_digits_shapes_ranges_and_fixed_split(digits):
  from sklearn.datasets import load_digits
  assert (len(digits.train), len(digits.test)) == (1437, 360)
  assert digits.image_shape == (8, 8, 1) and digits.num_classes == 10
  assert digits.bounds == (0.0, 1.0)
  tr, te = _all(digits.train), _all(digits.test)
  for b, n in ((tr, 1437), (te, 360)):
    chex.assert_shape(b["image"], (n, 8, 8, 1))
    chex.assert_shape(b["label"], (n,))
    assert b["image"].dtype == np.float32 and b["label"].dtype == np.int32
    assert b["image"].min() == 0.0 and b["image"].max() == 1.0
    np.testing.assert_array_equal(b["image"] * 16, np.round(b["image"] * 16))
  # Stratified: every class has 35-37 test examples (360 * n_c / 1797).
  counts = np.bincount(te["label"], minlength=10)
  assert counts.sum() == 360 and counts.min() >= 35 and counts.max() <= 37
  # The two splits are a partition of sklearn's 1797 images (as multisets).
  sk = load_digits()
  ours = np.concatenate([tr["image"], te["image"]]).reshape(1797, 64) * 16
  ours_lab = np.concatenate([tr["label"], te["label"]])
  key = lambda x, y: np.lexsort(np.column_stack([x, y]).T)  # noqa: E731
  o1 = key(ours, ours_lab)
  o2 = key(sk.data, sk.target)
  np.testing.assert_array_equal(ours[o1], sk.data[o2])
  np.testing.assert_array_equal(ours_lab[o1], sk.target[o2])


def test_digits_split_is_fixed_and_independent_of_seed(digits):
  other = D.load_dataset(_cfg(), seed=123)
  for a, b in ((digits.train, other.train), (digits.test, other.test)):
    chex.assert_trees_all_equal(_all(a), _all(b))


# ------------------------------------------------------------------ batches


def _toy(n=10, shape=(2, 2, 1)):
  images = np.arange(n * int(np.prod(shape)), dtype=np.float32).reshape(
      (n,) + shape)
  return D.ArraySource(images, np.arange(n))


def test_iterate_batches_covers_each_example_once_per_epoch():
  src = _toy(10)
  batches = list(D.iterate_batches(src, 3, seed=0, epoch=0, shuffle=True,
                                   drop_remainder=False, process_index=0,
                                   process_count=1))
  assert [b["label"].shape[0] for b in batches] == [3, 3, 3, 1]
  assert len(batches) == D.steps_per_epoch(10, 3, drop_remainder=False)
  labels = np.concatenate([b["label"] for b in batches])
  np.testing.assert_array_equal(np.sort(labels), np.arange(10))
  for b in batches:   # images travel with their labels
    np.testing.assert_array_equal(b["image"][:, 0, 0, 0], b["label"] * 4.0)
    assert b["image"].dtype == np.float32 and b["label"].dtype == np.int32
  dropped = list(D.iterate_batches(src, 3, seed=0, epoch=0,
                                   process_index=0, process_count=1))
  assert len(dropped) == D.steps_per_epoch(10, 3) == 3
  np.testing.assert_array_equal(
      np.concatenate([b["label"] for b in dropped]), labels[:9])


def test_iterate_batches_deterministic_and_differs_across_epochs():
  src = _toy(50)

  def order(seed, epoch, shuffle=True):
    return np.concatenate([b["label"] for b in D.iterate_batches(
        src, 5, seed=seed, epoch=epoch, shuffle=shuffle, process_index=0,
        process_count=1)])

  np.testing.assert_array_equal(order(0, 0), order(0, 0))
  assert not np.array_equal(order(0, 0), order(0, 1))
  assert not np.array_equal(order(0, 0), order(1, 0))
  np.testing.assert_array_equal(order(0, 0, False), np.arange(50))
  rest = np.concatenate([b["label"] for b in D.iterate_batches(
      src, 5, seed=0, epoch=0, process_index=0, process_count=1,
      start_step=3)])
  np.testing.assert_array_equal(rest, order(0, 0)[15:])


@pytest.mark.parametrize("drop", [True, False])
def test_two_processes_get_disjoint_halves_of_the_global_batch(drop):
  src = _toy(22)
  kw = dict(seed=7, epoch=3, drop_remainder=drop)
  glob = list(D.iterate_batches(src, 8, process_index=0, process_count=1, **kw))
  p0 = list(D.iterate_batches(src, 8, process_index=0, process_count=2, **kw))
  p1 = list(D.iterate_batches(src, 8, process_index=1, process_count=2, **kw))
  assert len(glob) == len(p0) == len(p1) == (2 if drop else 3)
  for g, a, b in zip(glob, p0, p1):
    if g["label"].shape[0] == 8:
      assert a["label"].shape[0] == b["label"].shape[0] == 4
    assert not set(a["label"]) & set(b["label"])
    np.testing.assert_array_equal(
        np.concatenate([a["label"], b["label"]]), g["label"])
    np.testing.assert_array_equal(
        np.concatenate([a["image"], b["image"]]), g["image"])


def test_iterate_batches_rejects_bad_settings():
  src = _toy(10)
  with pytest.raises(ValueError, match="multiple of process_count=2"):
    next(D.iterate_batches(src, 3, process_index=0, process_count=2))
  with pytest.raises(ValueError, match="process_index=2"):
    next(D.iterate_batches(src, 4, process_index=2, process_count=2))
  with pytest.raises(ValueError, match="drop_remainder"):
    next(D.iterate_batches(src, 11, process_index=0, process_count=1))


def test_iterate_batches_defaults_to_jax_process():
  b = next(D.iterate_batches(_toy(10), 4, seed=0, epoch=0))
  assert b["label"].shape == (4,)   # single process: the whole global batch


# ------------------------------------------------------------------ derived


def test_pad_to_centres_the_image(digits):
  for p in (12, 11):
    ds = D.load_dataset(_cfg(pad_to=p))
    assert ds.image_shape == (p, p, 1)
    x, x0 = ds.test.get([0, 5, 7]), digits.test.get([0, 5, 7])
    chex.assert_shape(x["image"], (3, p, p, 1))
    top = (p - 8) // 2
    np.testing.assert_array_equal(x["image"][:, top:top + 8, top:top + 8],
                                  x0["image"])
    assert x["image"].sum() == pytest.approx(x0["image"].sum())
    np.testing.assert_array_equal(x["label"], x0["label"])


def test_binary_subset_labels(digits):
  ds = D.load_dataset(_cfg(classes=(3, 8)))
  assert ds.num_classes == 2
  for src, base in ((ds.train, digits.train), (ds.test, digits.test)):
    b, b0 = _all(src), _all(base)
    keep = np.isin(b0["label"], (3, 8))
    np.testing.assert_array_equal(b["label"], (b0["label"][keep] == 8))
    np.testing.assert_array_equal(b["image"], b0["image"][keep])
    np.testing.assert_array_equal(src.labels(), b["label"])
  assert set(np.unique(_all(ds.train)["label"])) == {0, 1}


def test_subsets_are_seeded(digits):
  a = D.load_dataset(_cfg(num_train=100, num_test=50), seed=1)
  b = D.load_dataset(_cfg(num_train=100, num_test=50), seed=1)
  c = D.load_dataset(_cfg(num_train=100, num_test=50), seed=2)
  assert (len(a.train), len(a.test)) == (100, 50)
  chex.assert_trees_all_equal(_all(a.train), _all(b.train))
  assert not np.array_equal(_all(a.train)["image"], _all(c.train)["image"])
  full = _all(digits.train)["image"].reshape(1437, -1)
  sub = _all(a.train)["image"].reshape(100, -1)
  assert all((full == row).all(1).any() for row in sub)


def test_shift_code_decodes_to_label_in_train_only(digits):
  ds = D.load_dataset(_cfg(shift_enabled=True, shift_code_size=4,
                           shift_position=(2, 1), shift_value=0.75), seed=0)
  kw = dict(code_size=4, position=(2, 1), value=0.75)
  tr, tr0 = _all(ds.train), _all(digits.train)
  np.testing.assert_array_equal(D.decode_shift_code(tr["image"], **kw),
                                tr["label"])
  assert set(np.unique(tr["image"][:, 2, 1:5])) <= {0.0, 0.75}
  # Everything outside the code pixels is untouched.
  mask = np.ones((8, 8, 1), bool)
  mask[2, 1:5] = False
  np.testing.assert_array_equal(tr["image"][:, mask], tr0["image"][:, mask])
  # Test: label-independent random codes; agreement ~ 1/10 for each seed
  # (binomial sd 0.016 over 360 examples; 5 sd bound), ~0.1 on average.
  rates = []
  for seed in range(5):
    te = _all(D.load_dataset(_cfg(shift_enabled=True, shift_position=(2, 1),
                                  shift_value=0.75), seed=seed).test)
    code = D.decode_shift_code(te["image"], **kw)
    assert code.min() >= 0 and code.max() < 10
    rates.append(np.mean(code == te["label"]))
    assert abs(rates[-1] - 0.1) < 0.08
    # Not a function of the label: every class sees several codes.
    assert all(len(np.unique(code[te["label"] == c])) >= 4 for c in range(10))
  assert abs(np.mean(rates) - 0.1) < 0.035
  # Deterministic per seed.
  again = _all(D.load_dataset(_cfg(shift_enabled=True, shift_position=(2, 1),
                                   shift_value=0.75), seed=4).test)
  np.testing.assert_array_equal(again["image"], te["image"])


def test_shift_test_batches_carry_the_planted_code_label(digits):
  kw = dict(code_size=4, position=(2, 1), value=0.75)
  ds = D.load_dataset(_cfg(shift_enabled=True, shift_code_size=4,
                           shift_position=(2, 1), shift_value=0.75), seed=3)
  te = _all(ds.test)
  assert te["code_label"].dtype == np.int32
  chex.assert_shape(te["code_label"], te["label"].shape)
  # code_label is exactly the code decoded from the planted pixels ...
  np.testing.assert_array_equal(te["code_label"],
                                D.decode_shift_code(te["image"], **kw))
  # ... and independent of the digit: it differs from it ~90% of the time.
  assert np.mean(te["code_label"] != te["label"]) > 0.75
  # Per-index lookup: any index order gives the same per-example codes.
  idx = np.array([7, 0, 359, 7, 42])
  part = ds.test.get(idx)
  np.testing.assert_array_equal(part["code_label"], te["code_label"][idx])
  np.testing.assert_array_equal(part["image"], te["image"][idx])
  assert ds.test.get(np.zeros((0,), np.int64))["code_label"].shape == (0,)
  # Training batches (code = label) and test_mode="none" add no key.
  assert set(ds.train.get(np.arange(4))) == {"image", "label"}
  none = D.shift_dataset(digits, construction="code", code_size=4,
                         position=(2, 1), value=0.75,
                         test_mode="none")
  assert set(none.test.get(np.arange(4))) == {"image", "label"}


def test_shift_on_padded_binary_rgb_like_multichannel():
  src = D.ArraySource(np.zeros((6, 4, 5, 3), np.float32), np.arange(6) % 3)
  ds = D.Dataset("toy", src, src, 3, (4, 5, 3))
  sh = D.shift_dataset(ds, construction="code", code_size=2,
                       position=(3, 3), seed=0)
  x = _all(sh.train)["image"]
  bits = D.decode_shift_code(x, code_size=2, position=(3, 3))
  np.testing.assert_array_equal(bits, np.arange(6) % 3)
  np.testing.assert_array_equal(x[..., 0], x[..., 2])   # all channels


def test_spheres():
  ds = D.load_dataset(_cfg(name="spheres", sphere_dim=100,
                           sphere_num_train=400, sphere_num_test=100))
  assert ds.image_shape == (10, 10, 1) and ds.num_classes == 2
  assert ds.bounds is None
  b = _all(ds.train)
  r = np.linalg.norm(b["image"].reshape(400, -1), axis=1)
  np.testing.assert_allclose(r, np.where(b["label"] == 0, 1.0, 10.0),
                             rtol=1e-5)
  assert np.bincount(b["label"]).tolist() == [200, 200]
  flat = D.load_dataset(_cfg(name="spheres", sphere_dim=7,
                             sphere_layout="channels", sphere_num_train=4,
                             sphere_num_test=4))
  assert flat.image_shape == (1, 1, 7)
  with pytest.raises(ValueError, match="sphere_layout='channels'"):
    D.load_dataset(_cfg(name="spheres", sphere_dim=7))


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize("kw, match", [
    (dict(name="mnsit"), r"config.data.name='mnsit'"),
    (dict(classes=(3, 3)), r"config.data.classes"),
    (dict(classes=(3, 10)), r"config.data.classes=\(3, 10\).*\[0, 10\)"),
    (dict(classes=(1, 2, 3)), r"config.data.classes"),
    (dict(pad_to=6), r"config.data.pad_to=6 is smaller.*pad_to >= 8"),
    (dict(num_train=-1), r"config.data.num_train=-1"),
    (dict(num_test=361), r"config.data.num_test=361 exceeds"),
    (dict(image_size=16), r"config.data.image_size"),
    (dict(shift_enabled=True, shift_code_size=3), r"shift.code_size=3.*>= 4"),
    (dict(shift_enabled=True, shift_position=(0, 5)),
     r"shift.position=\(0, 5\).*col <= 4"),
    (dict(shift_enabled=True, shift_position=(0, 5), pad_to=10), None),
    (dict(shift_enabled=True, shift_position=(8, 0)), r"shift.position"),
    (dict(shift_enabled=True, shift_value=2.0), r"shift.value=2.0"),
])
def test_validation_errors(kw, match, monkeypatch):
  import advinv_jax.data._builtin as builtin
  if match is None:   # valid: position fits the padded 10x10 image
    assert D.load_dataset(_cfg(**kw)).image_shape == (10, 10, 1)
    return
  # Raised before any data are read.
  monkeypatch.setattr(builtin, "load_digits", lambda: 1 / 0)
  with pytest.raises(ValueError, match=match):
    D.load_dataset(_cfg(**kw))


# ------------------------------------------------------------------ IDX


def _idx_bytes(arr, magic_ndim=None):
  arr = np.asarray(arr, np.uint8)
  nd = arr.ndim if magic_ndim is None else magic_ndim
  head = bytes([0, 0, 8, nd]) + b"".join(
      int(s).to_bytes(4, "big") for s in arr.shape)
  return head + arr.tobytes()


def _write_mnist(folder, gz, n_train=12, n_test=6, h=5, w=4, seed=0):
  rng = np.random.default_rng(seed)
  data = {}
  os.makedirs(folder, exist_ok=True)
  for stem, n in (("train", n_train), ("t10k", n_test)):
    img = rng.integers(0, 256, (n, h, w), dtype=np.uint8)
    lab = rng.integers(0, 10, n, dtype=np.uint8)
    data[stem] = (img, lab)
    for kind, arr, nd in (("images", img, 3), ("labels", lab, 1)):
      path = os.path.join(folder, f"{stem}-{kind}-idx{nd}-ubyte")
      raw = _idx_bytes(arr)
      if gz:
        with gzip.open(path + ".gz", "wb") as f:
          f.write(raw)
      else:
        with open(path, "wb") as f:
          f.write(raw)
  return data


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_idx_reads_raw_and_gz(tmp_path, gz, monkeypatch):
  monkeypatch.delenv("ADVINV_MNIST_DIR", raising=False)
  data = _write_mnist(str(tmp_path), gz)
  ds = D.load_dataset(_cfg(name="mnist_idx", data_dir=str(tmp_path)))
  assert ds.image_shape == (5, 4, 1) and ds.num_classes == 10
  for src, stem in ((ds.train, "train"), (ds.test, "t10k")):
    b = _all(src)
    img, lab = data[stem]
    np.testing.assert_allclose(b["image"][..., 0], img / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(b["label"], lab)
    assert b["image"].dtype == np.float32 and b["label"].dtype == np.int32
  # "mnist" without tfds data falls back to the same IDX files.
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "no_tfds"))
  m = D.load_dataset(_cfg(name="mnist", data_dir=str(tmp_path)))
  chex.assert_trees_all_equal(_all(m.test), _all(ds.test))
  monkeypatch.setenv("ADVINV_MNIST_DIR", str(tmp_path))
  m = D.load_dataset(_cfg(name="mnist_idx"))
  assert len(m.train) == 12


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("corruption, match", [
    ("magic", r"train-images-idx3-ubyte.*wrong magic number 0x00000801"),
    ("truncated", r"train-images-idx3-ubyte.*truncated"),
    ("trailing", r"train-images-idx3-ubyte.*trailing"),
    ("count", r"t10k-images-idx3-ubyte.*5 labels"),
    ("label_range", r"train-labels-idx1-ubyte.*label 12"),
])
def test_mnist_idx_corrupted_files_raise_clearly(tmp_path, gz, corruption,
                                                 match):
  data = _write_mnist(str(tmp_path), gz)
  suffix = ".gz" if gz else ""
  img, lab = data["train"]
  if corruption == "magic":   # a labels header on the images file
    name, raw = "train-images-idx3-ubyte", _idx_bytes(lab)
  elif corruption == "truncated":
    name, raw = "train-images-idx3-ubyte", _idx_bytes(img)[:-7]
  elif corruption == "trailing":
    name, raw = "train-images-idx3-ubyte", _idx_bytes(img) + b"\0\0"
  elif corruption == "count":
    name, raw = "t10k-labels-idx1-ubyte", _idx_bytes(data["t10k"][1][:5])
  else:
    name, raw = "train-labels-idx1-ubyte", _idx_bytes(
        np.full_like(lab, 12))
  path = os.path.join(tmp_path, name + suffix)
  opener = gzip.open if gz else open
  with opener(path, "wb") as f:
    f.write(raw)
  with pytest.raises(ValueError, match=match):
    D.load_dataset(_cfg(name="mnist_idx", data_dir=str(tmp_path)))


def test_mnist_idx_broken_gzip_stream(tmp_path):
  _write_mnist(str(tmp_path), gz=True)
  path = os.path.join(tmp_path, "train-images-idx3-ubyte.gz")
  with open(path, "rb") as f:
    blob = f.read()
  with open(path, "wb") as f:
    f.write(blob[:len(blob) // 2])
  with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz.*corrupt"):
    D.load_dataset(_cfg(name="mnist_idx", data_dir=str(tmp_path)))


def test_mnist_idx_missing_files(tmp_path, monkeypatch):
  monkeypatch.delenv("ADVINV_MNIST_DIR", raising=False)
  with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
    D.load_dataset(_cfg(name="mnist_idx", data_dir=str(tmp_path)))


# ------------------------------------------------------------------ tfds


@pytest.fixture
def no_tfds_calls(monkeypatch):
  """Makes any call into tfds.data_source / tfds.builder fail the test."""
  import tensorflow_datasets as tfds

  def boom(*a, **k):
    raise AssertionError("tfds was called for a dataset that is not there")

  monkeypatch.setattr(tfds, "data_source", boom)
  monkeypatch.setattr(tfds, "builder", boom)


@pytest.mark.parametrize("name", ["cifar10", "imagenet2012", "tfds:mnist",
                                  "mnist"])
def test_missing_tfds_dataset_fails_fast_with_instructions(
    tmp_path, monkeypatch, name, no_tfds_calls):
  monkeypatch.delenv("ADVINV_MNIST_DIR", raising=False)
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "default_dir"))
  t0 = time.perf_counter()
  with pytest.raises(D.DatasetNotPreparedError) as e:
    D.load_dataset(_cfg(name=name, data_dir=str(tmp_path)))
  # Not a timing benchmark: tfds's own network retry takes minutes.
  assert time.perf_counter() - t0 < 10.0
  msg = str(e.value)
  assert "download_and_prepare" in msg and "file_format='array_record'" in msg
  assert "data_dir" in msg
  if "mnist" in name:
    assert "mnist_idx" in msg
  assert isinstance(e.value, ValueError)   # also a ValueError


def test_tfrecord_only_preparation_is_reported(tmp_path, no_tfds_calls):
  vdir = tmp_path / "cifar10" / "3.0.2"
  vdir.mkdir(parents=True)
  (vdir / "dataset_info.json").write_text("{}")
  (vdir / "cifar10-train.tfrecord-00000-of-00001").write_text("")
  with pytest.raises(D.DatasetNotPreparedError, match="array_record"):
    D.load_dataset(_cfg(name="cifar10", data_dir=str(tmp_path)))


@pytest.fixture
def mocked_tfds(monkeypatch):
  """tfds.testing.mock_data, with the on-disk check skipped (nothing on disk)."""
  import tensorflow_datasets as tfds
  monkeypatch.setattr(_tfds, "assert_prepared", lambda *a, **k: None)
  with tfds.testing.mock_data(num_examples=6):
    yield


def test_tfds_route_with_mock_data(mocked_tfds, tmp_path):
  ds = D.load_dataset(_cfg(name="tfds:mnist", data_dir=str(tmp_path)))
  assert ds.image_shape == (28, 28, 1) and ds.num_classes == 10
  assert (len(ds.train), len(ds.test)) == (6, 6)
  assert isinstance(ds.train, D.ArraySource)      # small set: in memory
  b = _all(ds.train)
  chex.assert_shape(b["image"], (6, 28, 28, 1))
  assert b["image"].dtype == np.float32 and b["label"].dtype == np.int32
  assert 0.0 <= b["image"].min() and b["image"].max() <= 1.0
  assert b["image"].max() > 0.5 and b["label"].max() < 10
  padded = D.load_dataset(_cfg(name="cifar10", data_dir=str(tmp_path),
                               pad_to=34))
  assert padded.image_shape == (34, 34, 3)
  chex.assert_shape(padded.test.get([1, 4])["image"], (2, 34, 34, 3))


def test_tfds_lazy_imagenet_resize_with_mock_data(mocked_tfds, tmp_path):
  ds = D.load_dataset(_cfg(name="imagenet2012", data_dir=str(tmp_path),
                           image_size=8))
  assert ds.image_shape == (8, 8, 3) and ds.num_classes == 1000
  assert isinstance(ds.train, D.TFDSSource)       # large set: lazy
  b = ds.test.get([5, 0, 2])
  chex.assert_shape(b["image"], (3, 8, 8, 3))
  assert b["image"].dtype == np.float32 and b["label"].dtype == np.int32
  assert 0.0 <= b["image"].min() and b["image"].max() <= 1.0
  batches = list(D.iterate_batches(ds.train, 4, seed=0, epoch=0,
                                   drop_remainder=False, process_index=0,
                                   process_count=1))
  assert sum(x["label"].shape[0] for x in batches) == 6


def test_resize_center_crop_exact_cases():
  rng = np.random.default_rng(0)
  img = rng.integers(0, 256, (6, 12, 3), dtype=np.uint8)
  # Shorter side already 6: no resampling, just the central 6x6 crop.
  np.testing.assert_array_equal(D.resize_center_crop(img, 6, 1.0),
                                img[:, 3:9])
  flat = np.full((9, 13, 1), 77, np.uint8)
  out = D.resize_center_crop(flat, 4, 0.875)
  assert out.shape == (4, 4, 1) and (out == 77).all()


# A real array_record dataset prepared from numpy, read back through the
# unmocked route (filesystem check, tfds.data_source, batched reads,
# label-only reads for the binary subset).
@pytest.fixture(scope="module")
def prepared_dir(tmp_path_factory):
  import PIL.Image
  import tensorflow_datasets as tfds

  class AdvinvTinyImages(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.
                                   FeaturesDict({
                                       "image": tfds.features.Image(
                                           shape=(None, None, 3)),
                                       "label": tfds.features.ClassLabel(
                                           num_classes=4)}))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {"train": self._generate_examples(10, 0),
              "test": self._generate_examples(6, 1)}

    def _generate_examples(self, n, seed):
      rng = np.random.default_rng(seed)
      for i in range(n):
        h, w = rng.integers(5, 12, 2)
        img = np.full((h, w, 3), 20 * i, np.uint8)   # PNG-encoded by Pillow
        yield i, {"image": PIL.Image.fromarray(img),
                  "label": i % 4}

  d = str(tmp_path_factory.mktemp("tfds"))
  AdvinvTinyImages(data_dir=d, file_format="array_record").download_and_prepare()
  return d


def test_tfds_prepared_array_record_route(prepared_dir):
  ds = D.load_dataset(_cfg(name="tfds:advinv_tiny_images",
                           data_dir=prepared_dir, image_size=4))
  assert ds.image_shape == (4, 4, 3) and ds.num_classes == 4
  assert (len(ds.train), len(ds.test)) == (10, 6)
  # tfds shuffles records while preparing; image i is constant 20*i with
  # label i % 4, so check image/label agreement instead of order.
  b = _all(ds.train)
  ids = np.round(b["image"][:, 0, 0, 0] * 255 / 20).astype(int)
  np.testing.assert_array_equal(np.sort(ids), np.arange(10))
  np.testing.assert_array_equal(b["label"], ids % 4)
  np.testing.assert_allclose(b["image"], (20 * ids / 255.0)[:, None, None, None]
                             * np.ones((10, 4, 4, 3)), atol=1e-6)
  three = ds.train.get([3, 9, 0])   # batched random access = element access
  chex.assert_trees_all_equal(three, ds.train.get([3, 9, 0]))
  np.testing.assert_array_equal(three["label"], b["label"][[3, 9, 0]])
  bin_ds = D.load_dataset(_cfg(name="tfds:advinv_tiny_images",
                               data_dir=prepared_dir, image_size=4,
                               classes=(1, 2)))
  tr = _all(bin_ds.train)
  tr_ids = np.round(tr["image"][:, 0, 0, 0] * 255 / 20).astype(int)
  np.testing.assert_array_equal(np.sort(tr_ids), [1, 2, 5, 6, 9])
  np.testing.assert_array_equal(tr["label"], (tr_ids % 4 == 2).astype(int))
