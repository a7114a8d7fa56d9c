"""Training data: FeatureStore on a tiny cache (read lazily and loaded into memory), ParallelData pairs,
BucketBatcher batches."""
import logging
import os

import numpy as np
import pytest

import imcap  # noqa: F401  (sets OMP_NUM_THREADS)
from imcap import constants as C
from imcap.data import BucketBatcher, ImageBatcher, ParallelData, bucket_keys, prefetched
from imcap.features import FeatureStore, LazyFeatures
from imcap.utils import ImcapError
from imcap.vocab import build_vocab

REGIONS, DIM = 3, 4
NUM_IMAGES = 12
MISSING_LINE = 5  # 0-based line of the features list that names a missing file
LOAD_MODES = pytest.mark.parametrize("load_all", [False, True], ids=["lazy", "loaded"])


def caption_of(i):
    """Caption of pair i: a word naming the pair, then 0..8 filler words (lengths 2..10 with </s>)."""
    return ["w%d" % i] + ["x"] * (i % 9)


def write_lines(path, lines):
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(line + "\n" for line in lines))
    return str(path)


def write_cache(root, num_images=NUM_IMAGES, missing=(MISSING_LINE,)):
    """``num_images`` feature files whose values are the image number; the list names them in order, except the
    lines in ``missing``, which name a file that does not exist."""
    os.makedirs(os.path.join(root, "img"), exist_ok=True)
    lines = []
    for i in range(num_images):
        rel = "img/%02d.jpg.npy" % i
        if i in missing:
            lines.append("img/missing%02d.jpg.npy" % i)
            continue
        np.save(os.path.join(root, rel), np.full((REGIONS, DIM), i, dtype=np.float16))
        lines.append(rel)
    return write_lines(os.path.join(root, "train.features"), lines)


@pytest.fixture(params=[False, True], ids=["lazy", "loaded"])
def corpus(tmp_path, request):
    """(store, captions path, vocab) of NUM_IMAGES pairs, one of them unreadable; the store reads lazily or has
    loaded everything."""
    list_path = write_cache(str(tmp_path))
    captions = [" ".join(caption_of(i)) for i in range(NUM_IMAGES)]
    caption_path = write_lines(tmp_path / "train.captions", captions)
    vocab = build_vocab([c.split() for c in captions])
    return FeatureStore(list_path, load_all_to_memory=request.param), caption_path, vocab


def pair_number(vocab, target_in_row):
    """The i of the ``w<i>`` word right after <s>."""
    return int(vocab.idx_to_token[int(target_in_row[1])][1:])


# --- FeatureStore ---------------------------------------------------------------------------------------------

@LOAD_MODES
def test_store_skips_unreadable_line_with_warning(tmp_path, caplog, load_all):
    list_path = write_cache(str(tmp_path))
    with caplog.at_level(logging.WARNING):
        store = FeatureStore(list_path, load_all_to_memory=load_all)
    assert isinstance(store.features, np.ndarray if load_all else LazyFeatures)
    assert len(store) == NUM_IMAGES
    assert store.index[MISSING_LINE] == -1
    assert (np.delete(store.index, MISSING_LINE) >= 0).all()
    assert store.features.shape == (NUM_IMAGES - 1, REGIONS, DIM)
    assert store.shape == (REGIONS, DIM)
    assert store.features.dtype == np.float16
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(":%d:" % (MISSING_LINE + 1) in w and "missing%02d" % MISSING_LINE in w for w in warnings), warnings
    for line, row in enumerate(store.index):  # each line's row holds that image's features
        if row >= 0:
            assert (store.features[row] == line).all()


def test_store_reads_each_unique_file_once(tmp_path, monkeypatch):
    write_cache(str(tmp_path), num_images=3, missing=())
    lines = ["img/00.jpg.npy", "img/01.jpg.npy", "img/00.jpg.npy", "img/02.jpg.npy", "img/01.jpg.npy",
             "img/00.jpg.npy"]
    list_path = write_lines(tmp_path / "five.features", lines)
    loads = []
    real_load = np.load

    def counting_load(path, *args, **kwargs):
        loads.append(path)
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(np, "load", counting_load)
    store = FeatureStore(list_path, dtype="float32", load_all_to_memory=True)
    assert store.features.shape == (3, REGIONS, DIM)
    assert store.features.dtype == np.float32
    assert len(loads) == 3 and len(set(loads)) == 3
    assert store.index.tolist() == [0, 1, 0, 2, 1, 0]
    assert len(store) == 6


def test_lazy_store_reads_only_the_rows_asked_for(tmp_path):
    """A lazy store reads the headers when it is made and, on each access, only the files of its rows: a file
    removed afterwards fails only the access that needs it, naming it; values and dtype are those of a loaded
    store."""
    list_path = write_cache(str(tmp_path), missing=())
    lazy = FeatureStore(list_path, dtype="float32")
    loaded = FeatureStore(list_path, dtype="float32", load_all_to_memory=True)
    assert lazy.features.shape == loaded.features.shape == (NUM_IMAGES, REGIONS, DIM) and len(lazy.features) == 12
    os.remove(os.path.join(str(tmp_path), "img/07.jpg.npy"))
    rows = np.array([3, 0, 11, 3])
    assert lazy.gather(rows).tolist() == loaded.gather(rows).tolist() == [[[v] * DIM] * REGIONS for v in rows]
    for key in (rows, 4, slice(2, 5), (rows, 0, 0), (4, 1)):
        got, expected = lazy.features[key], loaded.features[key]
        assert got.dtype == expected.dtype == np.float32 and np.array_equal(got, expected), key
    with pytest.raises(ImcapError, match=r"img/07\.jpg\.npy"):
        lazy.gather(np.array([1, 7]))


def test_lazy_store_casts_and_checks_truncated_files(tmp_path):
    """float32 files read into a float16 store give the loaded store's float16 values; a file cut short after the
    store was made is an error that names it, not garbage."""
    os.makedirs(str(tmp_path / "img"))
    values = np.linspace(0, 1, REGIONS * DIM, dtype=np.float32).reshape(REGIONS, DIM) / 3
    for i in range(2):
        np.save(str(tmp_path / ("img/%d.npy" % i)), values + i)
    list_path = write_lines(tmp_path / "f.features", ["img/0.npy", "img/1.npy"])
    lazy, loaded = FeatureStore(list_path), FeatureStore(list_path, load_all_to_memory=True)
    assert lazy.features.dtype == loaded.features.dtype == np.float16
    assert lazy.features[[0, 1]].tobytes() == loaded.features[[0, 1]].tobytes()
    path = str(tmp_path / "img/1.npy")
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:-8])
    with pytest.raises(ImcapError, match=r"img/1\.npy.*truncated"):
        lazy.features[1]


@LOAD_MODES
def test_store_source_root(tmp_path, load_all):
    write_cache(str(tmp_path / "cache"), num_images=2, missing=())
    list_path = write_lines(tmp_path / "elsewhere.features", ["img/01.jpg.npy"])
    store = FeatureStore(list_path, source_root=str(tmp_path / "cache"), load_all_to_memory=load_all)
    assert store.index.tolist() == [0] and (store.features[0] == 1).all()


@LOAD_MODES
def test_store_with_no_readable_file_raises(tmp_path, load_all):
    list_path = write_lines(tmp_path / "bad.features", ["nope.npy", "also-nope.npy"])
    with pytest.raises(ImcapError, match="bad.features"):
        FeatureStore(list_path, load_all_to_memory=load_all)


@LOAD_MODES
def test_store_with_files_of_another_shape_names_the_line(tmp_path, load_all):
    list_path = write_cache(str(tmp_path), num_images=3, missing=())
    np.save(str(tmp_path / "img/02.jpg.npy"), np.zeros((REGIONS + 1, DIM), dtype=np.float16))
    with pytest.raises(ImcapError, match=r"train\.features:3: features img/02\.jpg\.npy have shape \(4, 4\), "
                                         r"not \(3, 4\)"):
        FeatureStore(list_path, load_all_to_memory=load_all)


def test_prefetched_keeps_order_and_raises_where_the_item_fails():
    assert list(prefetched(lambda x: x * x, range(5))) == [0, 1, 4, 9, 16]
    assert list(prefetched(lambda x: x, [])) == []

    def make(x):
        if x == 2:
            raise ImcapError("item 2")
        return x

    results = prefetched(make, range(4))
    assert next(results) == 0 and next(results) == 1
    with pytest.raises(ImcapError, match="item 2"):
        next(results)


# --- ParallelData -----------------------------------------------------------------------------------------------

def test_pairs_skip_unreadable_features(corpus, caplog):
    store, caption_path, vocab = corpus
    with caplog.at_level(logging.WARNING):
        data = ParallelData(store, [caption_path], vocab, max_seq_len=40)
    assert len(data) == NUM_IMAGES - 1
    assert any("skipped" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    numbers = [int(vocab.idx_to_token[int(c[0])][1:]) for c in data.captions]
    assert numbers == [i for i in range(NUM_IMAGES) if i != MISSING_LINE]
    assert data.lengths.tolist() == [len(caption_of(i)) + 1 for i in numbers]


def test_make_batch_targets_and_features(corpus):
    store, caption_path, vocab = corpus
    data = ParallelData(store, [caption_path], vocab, max_seq_len=40)
    indices = [0, 3, 7]
    batch = data.make_batch(indices)
    length = int(data.lengths[indices].max())
    assert batch.target_in.shape == batch.target_out.shape == (3, length)
    assert batch.target_in.dtype == batch.target_out.dtype == np.int32
    assert batch.features.shape == (3, REGIONS, DIM) and batch.features.dtype == np.float32
    assert len(batch) == 3
    eos, bos = vocab[C.EOS_SYMBOL], vocab[C.BOS_SYMBOL]
    for row, index in enumerate(indices):
        caption = data.captions[index].tolist()
        n = len(caption)
        assert batch.target_in[row, 0] == bos
        assert batch.target_in[row, 1:n + 1].tolist() == caption
        assert (batch.target_in[row, n + 1:] == 0).all()
        assert batch.target_out[row, :n].tolist() == caption
        assert batch.target_out[row, n] == eos
        assert (batch.target_out[row, n + 1:] == 0).all()
        assert (batch.features[row] == pair_number(vocab, batch.target_in[row])).all()
    assert batch.num_tokens == sum(int(data.lengths[i]) for i in indices)  # words + </s>, no padding
    wider = data.make_batch(indices, length + 4)
    assert wider.target_in.shape[1] == length + 4
    assert wider.num_tokens == batch.num_tokens
    assert (wider.target_out[:, length:] == 0).all()


def test_long_captions_are_cut(tmp_path):
    list_path = write_cache(str(tmp_path), num_images=2, missing=())
    long_caption = ["w%d" % i for i in range(12)]
    caption_path = write_lines(tmp_path / "c", [" ".join(long_caption), "a b"])
    vocab = build_vocab([long_caption, ["a", "b"]])
    data = ParallelData(FeatureStore(list_path), [caption_path], vocab, max_seq_len=6)
    assert data.lengths.tolist() == [6, 3]
    assert [vocab.idx_to_token[i] for i in data.captions[0]] == long_caption[:5]
    batch = data.make_batch([0, 1])
    assert batch.target_in.shape == (2, 6)
    assert batch.target_out[0, 5] == vocab[C.EOS_SYMBOL]


def test_caption_line_count_mismatch_names_the_file(corpus, tmp_path):
    store, _, vocab = corpus
    short = write_lines(tmp_path / "short.captions", ["a b"] * (NUM_IMAGES - 2))
    with pytest.raises(ImcapError, match="short.captions"):
        ParallelData(store, [short], vocab, max_seq_len=40)


def test_several_reference_files_pair_with_the_same_images(corpus, tmp_path):
    store, caption_path, vocab = corpus
    second = write_lines(tmp_path / "second.captions", ["a"] * NUM_IMAGES)
    data = ParallelData(store, [caption_path, second], vocab, max_seq_len=40)
    assert len(data) == 2 * (NUM_IMAGES - 1)
    assert data.rows[:NUM_IMAGES - 1].tolist() == data.rows[NUM_IMAGES - 1:].tolist()


# --- BucketBatcher ----------------------------------------------------------------------------------------------

@pytest.fixture
def batcher(corpus):
    store, caption_path, vocab = corpus
    data = ParallelData(store, [caption_path], vocab, max_seq_len=40)
    return BucketBatcher(data, batch_size=2, bucket_width=3, seed=7), vocab


def test_batches_pad_to_their_bucket_key(batcher):
    batcher, vocab = batcher
    # every key is a bucket some caption goes to (the smallest key >= its length): no empty bucket
    assert set(batcher.keys) == {min(k for k in batcher.keys if k >= n) for n in batcher.data.lengths}
    assert batcher.keys == sorted(batcher.keys) and len(batcher.keys) > 1
    assert batcher.keys[-1] >= int(batcher.data.lengths.max())
    for batch in batcher.iter_epoch(0):
        length = batch.target_in.shape[1]
        assert length in batcher.keys
        numbers = [pair_number(vocab, row) for row in batch.target_in]
        lengths = [len(caption_of(i)) + 1 for i in numbers]
        assert all(n <= length for n in lengths)
        # every caption of the batch belongs to this bucket: longer than the next smaller key
        smaller = [k for k in batcher.keys if k < length]
        if smaller:
            assert all(n > smaller[-1] for n in lengths)


@pytest.mark.parametrize("max_len, width, keys", [(38, 3, [3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 33, 36, 38]),
                                                   (40, 3, [3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 33, 36, 39, 40]),
                                                   (10, 1, list(range(1, 11))), (2, 5, [2])])
def test_bucket_keys_pad_every_length_by_less_than_the_width(max_len, width, keys):
    # GluonNLP's ConstWidthBucket, used before, made keys 16, 18, ..., 40 for lengths 3..40 and width 3: every caption
    # of up to 16 tokens (most of a SentencePiece corpus) was padded to 16
    assert bucket_keys(max_len, width) == keys
    for n in range(1, max_len + 1):
        assert 0 <= min(k for k in keys if k >= n) - n < width
    with pytest.raises(ValueError, match="at least 1"):
        bucket_keys(max_len, 0)


def test_every_pair_once_per_epoch(batcher):
    batcher, vocab = batcher
    n = len(batcher.data)
    for epoch in range(3):
        indices = [i for b in batcher.epoch_batches(epoch) for i in b]
        assert sorted(indices) == list(range(n))
        numbers = [pair_number(vocab, row) for batch in batcher.iter_epoch(epoch) for row in batch.target_in]
        assert sorted(numbers) == [i for i in range(NUM_IMAGES) if i != MISSING_LINE]
    assert len(batcher) == len(batcher.epoch_batches(0))


def test_same_seed_and_epoch_same_batches(batcher, corpus):
    batcher, _ = batcher
    np.random.seed(1)
    first = batcher.epoch_batches(4)
    np.random.seed(2)  # the global random state does not matter ...
    assert batcher.epoch_batches(4) == first
    store, caption_path, vocab = corpus  # ... nor does the instance
    other = BucketBatcher(ParallelData(store, [caption_path], vocab, 40), batch_size=2, bucket_width=3, seed=7)
    assert other.epoch_batches(4) == first
    assert [b.target_in.tolist() for b in other.iter_epoch(4)] == [b.target_in.tolist()
                                                                     for b in batcher.iter_epoch(4)]
    assert batcher.epoch_batches(5) != first
    seeded = BucketBatcher(batcher.data, batch_size=2, bucket_width=3, seed=8)
    assert seeded.epoch_batches(4) != first


def test_epoch_order_does_not_depend_on_earlier_epochs(batcher):
    """A resumed run starts with a fresh batcher at epoch N; it must see the batches an uninterrupted run saw."""
    batcher, _ = batcher
    uninterrupted = [batcher.epoch_batches(epoch) for epoch in range(4)]
    resumed = BucketBatcher(batcher.data, batch_size=2, bucket_width=3, seed=7)
    assert resumed.epoch_batches(3) == uninterrupted[3]
    assert resumed.epoch_batches(1) == uninterrupted[1]


def test_epoch_batches_leave_global_random_state(batcher):
    batcher, _ = batcher
    np.random.seed(3)
    expected = np.random.rand()
    np.random.seed(3)
    batcher.epoch_batches(0)
    assert np.random.rand() == expected


def test_iter_epoch_resumes_at_batch(batcher):
    batcher, _ = batcher
    full = [b.target_in.tolist() for b in batcher.iter_epoch(2)]
    assert [b.target_in.tolist() for b in batcher.iter_epoch(2, start=3)] == full[3:]


def test_unshuffled_order_is_fixed(corpus):
    store, caption_path, vocab = corpus
    data = ParallelData(store, [caption_path], vocab, 40)
    unshuffled = BucketBatcher(data, batch_size=4, bucket_width=3, seed=1, shuffle=False)
    assert unshuffled.epoch_batches(0) == unshuffled.epoch_batches(1)


# --- augmented views ------------------------------------------------------------------------------------------

def write_views(root, num_images=NUM_IMAGES, missing=(MISSING_LINE,)):
    """Beside each readable ``img/NN.jpg.npy`` of :func:`write_cache`, its ``hflip`` view with value 100 + NN."""
    for i in range(num_images):
        if i not in missing:
            np.save(os.path.join(root, "img/%02d.jpg.hflip.npy" % i), np.full((REGIONS, DIM), 100 + i, dtype=np.float16))


@pytest.fixture(params=[False, True], ids=["lazy", "loaded"])
def augmented(tmp_path, request):
    """(ParallelData with the hflip view, vocab): pair features are i (original) or 100 + i (mirrored); read lazily
    or loaded."""
    list_path = write_cache(str(tmp_path))
    write_views(str(tmp_path))
    captions = [" ".join(caption_of(i)) for i in range(NUM_IMAGES)]
    caption_path = write_lines(tmp_path / "train.captions", captions)
    vocab = build_vocab([c.split() for c in captions])
    store = FeatureStore(list_path, augmentations=[C.AUGMENTATION_HFLIP], load_all_to_memory=request.param)
    return ParallelData(store, [caption_path], vocab, 40), vocab


def test_store_loads_views_beside_the_originals(augmented):
    store = augmented[0].store
    assert store.augmentations == ["hflip"] and len(store.views) == 2 and store.views[0] is store.features
    rows = store.index[store.index >= 0]
    assert (store.views[1][rows, 0, 0] == store.views[0][rows, 0, 0] + 100).all()
    picked = store.gather(np.array([0, 1, 2]), np.array([1, 0, 1]))
    assert picked.dtype == np.float32 and picked[:, 0, 0].tolist() == [100, 1, 102]
    assert store.gather(np.array([0, 1])).tolist() == store.features[[0, 1]].astype(np.float32).tolist()


@LOAD_MODES
def test_store_with_a_missing_view_names_the_line(tmp_path, load_all):
    list_path = write_cache(str(tmp_path))
    write_views(str(tmp_path))
    os.remove(os.path.join(str(tmp_path), "img/03.jpg.hflip.npy"))
    with pytest.raises(ImcapError, match=r"train\.features:4: cannot read the 'hflip' features img/03\.jpg\.hflip\.npy"
                                         r".*--augmentations hflip"):
        FeatureStore(list_path, augmentations=["hflip"], load_all_to_memory=load_all)


def test_each_epoch_draws_both_views_reproducibly(augmented):
    data, vocab = augmented
    batcher = BucketBatcher(data, batch_size=2, bucket_width=3, seed=7)

    def views_of(epoch, start=0):
        """pair number → 0 (original) or 1 (mirrored), from the features each batch carries"""
        seen = {}
        for batch in batcher.iter_epoch(epoch, start):
            for row, value in zip(batch.target_in, batch.features[:, 0, 0]):
                number = pair_number(vocab, row)
                assert value in (number, 100 + number)  # a pair's own image, in one of its views
                seen[number] = int(value >= 100)
        return seen

    epochs = [views_of(epoch) for epoch in range(6)]
    assert all(len(views) == NUM_IMAGES - 1 for views in epochs)
    assert views_of(3) == epochs[3]  # the same (seed, epoch) draws the same views ...
    fresh = BucketBatcher(data, batch_size=2, bucket_width=3, seed=7)
    assert [b.features.tolist() for b in fresh.iter_epoch(3, start=2)] == \
        [b.features.tolist() for b in batcher.iter_epoch(3, start=2)]  # ... also in a resumed run
    drawn = np.array([list(views.values()) for views in epochs])
    assert 0.25 < drawn.mean() < 0.75  # both views, about equally often
    assert len({tuple(views.items()) for views in epochs}) > 1  # and another draw every epoch


def test_unshuffled_batches_show_the_originals(augmented):
    data, _ = augmented
    for batch in BucketBatcher(data, batch_size=4, bucket_width=3, seed=1, shuffle=False).iter_epoch(0):
        assert (batch.features < 100).all()


def test_self_critical_batches_draw_views_too(augmented):
    data, _ = augmented
    batcher = ImageBatcher(data, batch_size=3, seed=7)
    values = [(int(data.store.features[batcher.rows[image], 0, 0]), int(feature[0, 0]))
              for epoch in range(4) for batch in batcher.iter_epoch(epoch)
              for image, feature in zip(batch.images, batch.features)]
    assert all(shown in (original, 100 + original) for original, shown in values)
    assert 0.25 < np.mean([shown >= 100 for _, shown in values]) < 0.75
    again = [b.features.tolist() for b in ImageBatcher(data, batch_size=3, seed=7).iter_epoch(2)]
    assert again == [b.features.tolist() for b in batcher.iter_epoch(2)]


# --- non-finite and truncated feature files ---------------------------------------------------------------------

NAN_LINE, INF_LINE = 3, 8   # 0-based lines of write_cache's list whose files get a NaN, an infinity


def spoil(root, line, value, dtype=np.float16):
    """Put ``value`` into one region of the file of ``write_cache``'s line ``line`` (written as ``dtype``)."""
    path = os.path.join(root, "img/%02d.jpg.npy" % line)
    features = np.full((REGIONS, DIM), line, dtype=dtype)
    features[1, 2] = value
    np.save(path, features)


def non_finite_warnings(caplog, when=("call",)):
    """The messages of the warnings about non-finite features logged in the test phases ``when``."""
    return [r.getMessage() for phase in when for r in caplog.get_records(phase)
            if r.levelno == logging.WARNING and "contain NaN or infinite values; skipped" in r.getMessage()]


@pytest.fixture(params=[False, True], ids=["lazy", "loaded"])
def spoiled(tmp_path, request):
    """(ParallelData, vocab) of write_cache's pairs, whose NAN_LINE file holds a NaN and whose INF_LINE file a
    float32 value beyond float16's range (infinite in the float16 store); read lazily or loaded."""
    root = str(tmp_path)
    list_path = write_cache(root)
    spoil(root, NAN_LINE, np.nan)
    spoil(root, INF_LINE, 1e6, dtype=np.float32)
    captions = [" ".join(caption_of(i)) for i in range(NUM_IMAGES)]
    caption_path = write_lines(tmp_path / "train.captions", captions)
    vocab = build_vocab([c.split() for c in captions])
    store = FeatureStore(list_path, load_all_to_memory=request.param)
    return ParallelData(store, [caption_path], vocab, 40), vocab


def test_non_finite_files_are_skipped_with_a_warning_naming_their_line(spoiled, caplog):
    """Loaded, the store skips the files with NaN or infinite values when it is made; read lazily, each is found by
    the first batch that reads it, which leaves its pair out, and skipped from then on. Either way every pair of a
    good file is trained on, no other, and each spoiled line gets one warning naming the list file and the line."""
    data, vocab = spoiled
    store = data.store
    loaded = store.load_all_to_memory
    good = [i for i in range(NUM_IMAGES) if i not in (MISSING_LINE, NAN_LINE, INF_LINE)]
    with caplog.at_level(logging.WARNING):
        batcher = BucketBatcher(data, batch_size=3, bucket_width=3, seed=7)
        epochs = [[pair_number(vocab, row) for batch in batcher.iter_epoch(epoch) for row in batch.target_in]
                  for epoch in range(2)]
    for numbers in epochs:
        assert sorted(numbers) == good
    for batch in batcher.iter_epoch(0):
        assert np.isfinite(batch.features).all()
        assert len(batch.features) == len(batch.target_in) == len(batch.target_out)
        assert all((feature == pair_number(vocab, row)).all() for feature, row in zip(batch.features, batch.target_in))
    if loaded:   # the store was made (and warned) in the fixture; the lines are left out of the pairs
        assert (store.index[[NAN_LINE, INF_LINE]] == -1).all() and len(data) == len(good)
        assert non_finite_warnings(caplog) == []
    else:   # the lines had rows; the reads found them
        assert store.non_finite_rows == {int(store.index[NAN_LINE]), int(store.index[INF_LINE])}
        assert non_finite_warnings(caplog, ["setup"]) == []
    warnings = non_finite_warnings(caplog, ["setup", "call"])
    assert len(warnings) == 2, warnings   # once each (lazily: though two epochs read them)
    for line in (NAN_LINE, INF_LINE):
        assert any("train.features:%d: features 'img/%02d.jpg.npy' contain NaN or infinite values; skipped"
                   % (line + 1, line) in w for w in warnings), warnings


@LOAD_MODES
def test_store_warns_for_non_finite_files_naming_every_line(tmp_path, caplog, load_all):
    """Lines that name the same spoiled file are each warned about, the file is read once (lazily: by the first
    read of it, which gives zeros for it and says it is unusable)."""
    root = str(tmp_path)
    write_cache(root, num_images=3, missing=())
    spoil(root, 1, -np.inf)
    list_path = write_lines(tmp_path / "dup.features", ["img/00.jpg.npy", "img/01.jpg.npy", "img/02.jpg.npy",
                                                        "img/01.jpg.npy"])
    with caplog.at_level(logging.WARNING):
        store = FeatureStore(list_path, load_all_to_memory=load_all)
        rows = np.unique(store.index[store.index >= 0])
        features, usable = store.read_batch(rows)
        assert store.gather(rows).tolist() == features.tolist()
    warnings = non_finite_warnings(caplog)
    assert [w.split(": features")[0].rsplit("/", 1)[-1] for w in warnings] == ["dup.features:2", "dup.features:4"]
    assert np.isfinite(features).all() and features.dtype == np.float32
    if load_all:
        assert store.index.tolist() == [0, -1, 1, -1] and usable.all()
        assert features[:, 0, 0].tolist() == [0, 2]
    else:
        assert store.index.tolist() == [0, 1, 2, 1] and usable.tolist() == [True, False, True]
        assert features[:, 0, 0].tolist() == [0, 0, 2]


def test_a_lazy_batch_of_non_finite_files_only_is_empty(tmp_path):
    root = str(tmp_path)
    list_path = write_cache(root, num_images=4, missing=())
    for line in (1, 2):
        spoil(root, line, np.nan)
    vocab = build_vocab([["a"]])
    data = ParallelData(FeatureStore(list_path), [write_lines(tmp_path / "c", ["a"] * 4)], vocab, 10)
    empty = data.make_batch([1, 2])
    assert len(empty) == 0 and empty.features.shape == (0, REGIONS, DIM) and empty.num_tokens == 0
    assert len(data.make_batch([0, 1, 3])) == 2
    images = ImageBatcher(data, batch_size=4, seed=1)
    (batch,) = list(images.iter_epoch(0))
    assert sorted(batch.images.tolist()) == [0, 3] and len(batch.features) == 2


@LOAD_MODES
def test_a_non_finite_view_skips_its_line(tmp_path, caplog, load_all):
    root = str(tmp_path)
    list_path = write_cache(root)
    write_views(root)
    features = np.full((REGIONS, DIM), 104, dtype=np.float16)
    features[0, 0] = np.nan
    np.save(os.path.join(root, "img/04.jpg.hflip.npy"), features)
    with caplog.at_level(logging.WARNING):
        store = FeatureStore(list_path, augmentations=[C.AUGMENTATION_HFLIP], load_all_to_memory=load_all)
        rows = np.arange(len(store.features))
        _, usable = store.read_batch(rows, np.ones(len(rows), dtype=np.int64))
    assert any("train.features:5: features 'img/04.jpg.hflip.npy' contain NaN" in w
               for w in non_finite_warnings(caplog))
    assert (store.index[4] == -1) == load_all
    assert usable.sum() == len(rows) - (0 if load_all else 1)


@LOAD_MODES
def test_a_truncated_file_is_skipped_with_a_warning(tmp_path, caplog, load_all):
    """A file cut short before the store is made is skipped with a warning naming its line, lazily too (its size is
    checked against its header); cut short later, a lazy read fails naming it
    (test_lazy_store_casts_and_checks_truncated_files)."""
    list_path = write_cache(str(tmp_path), missing=())
    path = str(tmp_path / "img/06.jpg.npy")
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:-2])
    with caplog.at_level(logging.WARNING):
        store = FeatureStore(list_path, load_all_to_memory=load_all)
    assert store.index[6] == -1 and (np.delete(store.index, 6) >= 0).all()
    assert any(":7: cannot read features 'img/06.jpg.npy'" in r.getMessage() for r in caplog.records), caplog.text
    with open(path, "wb") as f:
        f.write(b"")
    with caplog.at_level(logging.WARNING):
        assert FeatureStore(list_path, load_all_to_memory=load_all).index[6] == -1   # an empty file too
