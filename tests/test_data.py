"""Tests of qhqcnn.data.medmnist: dataset table, MD5/download handling, npz checks, relabelling."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pooch
import pytest

from qhqcnn.data import medmnist as data
from qhqcnn.data import medmnist_info as _medmnist
from qhqcnn.data.medmnist import (
    SPLITS,
    DatasetInfo,
    Relabel,
    dataset_info,
    ensure_dataset_file,
    load_npz_file,
    load_split,
)
from qhqcnn.errors import ConfigError, DataError

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_DATA_DIR = Path(
    os.environ.get(data.DATA_DIR_ENV) or REPO_ROOT.parent / "shared" / "medmnist"
).resolve()

# Official facts (shared/medmnist/README.md): task, classes, channels, split sizes, MD5.
REAL = {
    "breastmnist": (
        "binary-class",
        2,
        1,
        {"train": 546, "val": 78, "test": 156},
        "750601b1f35ba3300ea97c75c52ff8f6",
    ),
    "bloodmnist": (
        "multi-class",
        8,
        3,
        {"train": 11959, "val": 1712, "test": 3421},
        "7053d0359d879ad8a5505303e11de1dc",
    ),
    "retinamnist": (
        "ordinal-regression",
        5,
        3,
        {"train": 1080, "val": 120, "test": 400},
        "bd4c0672f1bba3e3a89f0e4e876791e4",
    ),
}


def real_file(name: str) -> Path:
    path = REAL_DATA_DIR / f"{name}.npz"
    if not path.is_file():
        pytest.skip(f"real MedMNIST file {path} not available")
    return path


# ---------------------------------------------------------------- synthetic files


def synthetic_arrays(n: int = 6, channels: int = 1, n_classes: int = 2) -> dict[str, np.ndarray]:
    """Arrays of a small MedMNIST-format file (default: shaped like BreastMNIST)."""
    rng = np.random.default_rng(0)
    shape = (n, 28, 28) if channels == 1 else (n, 28, 28, channels)
    arrays = {}
    for split in SPLITS:
        arrays[f"{split}_images"] = rng.integers(0, 256, size=shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % n_classes).astype(np.uint8).reshape(n, 1)
    return arrays


def write_npz(path: Path, **overrides: np.ndarray | None) -> Path:
    """Write a synthetic BreastMNIST-like npz; an override of None drops that key."""
    arrays = {**synthetic_arrays(), **overrides}
    np.savez_compressed(path, **{key: value for key, value in arrays.items() if value is not None})
    return path


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def breast_synthetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A synthetic breastmnist.npz in tmp_path whose MD5 is patched into INFO."""
    path = write_npz(tmp_path / "breastmnist.npz")
    monkeypatch.setitem(_medmnist.INFO["breastmnist"], "MD5", md5_of(path))
    return path


@pytest.fixture
def http_server() -> Iterator[tuple[str, dict[str, tuple[bytes, int]]]]:
    """Local HTTP server; routes map a path to (body to send, Content-Length to declare)."""
    routes: dict[str, tuple[bytes, int]] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            if self.path not in routes:
                self.send_error(404)
                return
            body, declared_length = routes[self.path]
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(declared_length))
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True  # a short body is then a dropped connection

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", routes
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(var, "127.0.0.1,localhost")


# ---------------------------------------------------------------- dataset table


def test_available_datasets_are_the_2d_ones() -> None:
    names = data.available_datasets()
    assert {"breastmnist", "bloodmnist", "retinamnist", "chestmnist", "pathmnist"} <= set(names)
    assert len(names) == 12
    assert not any(name.endswith("3d") for name in names)


@pytest.mark.parametrize("name", sorted(REAL))
def test_dataset_info_matches_official_table(name: str) -> None:
    task, n_classes, n_channels, sizes, md5 = REAL[name]
    info = dataset_info(name)
    assert (info.task, info.n_classes, info.n_channels) == (task, n_classes, n_channels)
    assert info.n_samples == sizes
    assert info.md5 == md5
    assert info.file_name == f"{name}.npz"
    assert info.loss_kind == "multi-class"
    assert sorted(info.label_names) == list(range(n_classes))
    assert info.url.startswith("https://")


def test_dataset_info_multi_label_and_case_insensitive() -> None:
    chest = dataset_info("ChestMNIST")
    assert chest.name == "chestmnist"
    assert chest.task == "multi-label, binary-class"
    assert chest.n_classes == 14
    assert chest.loss_kind == "multi-label"
    assert dataset_info(" BreastMNIST ") == dataset_info("breastmnist")


def test_unknown_dataset_lists_valid_names() -> None:
    with pytest.raises(ConfigError, match="valid names: .*bloodmnist"):
        dataset_info("nosuchmnist")
    with pytest.raises(ConfigError, match="3D datasets are not supported"):
        dataset_info("organmnist3d")
    with pytest.raises(ConfigError, match="nosuchmnist"):
        load_split("nosuchmnist", "test")


def test_resolve_data_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    assert data.resolve_data_dir(None) == Path(_medmnist.DEFAULT_ROOT)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "env"))
    assert data.resolve_data_dir(None) == tmp_path / "env"
    assert data.resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert data.resolve_data_dir(str(tmp_path)) == tmp_path


# ---------------------------------------------------------------- real files


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_dataset_loads_with_official_sizes(name: str) -> None:
    path = real_file(name)
    task, n_classes, n_channels, sizes, md5 = REAL[name]
    assert ensure_dataset_file(name, REAL_DATA_DIR, download=False) == path
    assert data.file_md5(path) == md5
    for split in SPLITS:
        loaded = load_split(name, split, REAL_DATA_DIR, download=False)
        assert loaded.images.shape == (sizes[split], 28, 28, n_channels)
        assert loaded.images.dtype == np.uint8
        assert loaded.labels.shape == (sizes[split],)
        assert loaded.labels.dtype == np.int64
        assert set(np.unique(loaded.labels)) == set(range(n_classes))
        assert loaded.info.task == task
        assert len(loaded) == sizes[split]


def test_real_bloodmnist_relabel_counts() -> None:
    real_file("bloodmnist")
    original = load_split("bloodmnist", "test", REAL_DATA_DIR, download=False).labels
    counts = np.bincount(original, minlength=8)

    ovr = load_split("bloodmnist", "test", REAL_DATA_DIR, relabel="ovr:3", download=False)
    assert len(ovr) == len(original)
    assert ovr.labels.sum() == counts[3]
    assert ovr.info.label_names == {0: "rest", 1: dataset_info("bloodmnist").label_names[3]}
    assert (ovr.info.task, ovr.info.n_classes, ovr.info.loss_kind) == (
        "binary-class",
        2,
        "multi-class",
    )
    assert ovr.info.n_samples == dataset_info("bloodmnist").n_samples

    pair = load_split("bloodmnist", "test", REAL_DATA_DIR, relabel=Relabel.parse("0,1"))
    assert len(pair) == counts[0] + counts[1]
    assert np.bincount(pair.labels).tolist() == [counts[0], counts[1]]
    assert pair.images.shape == (counts[0] + counts[1], 28, 28, 3)
    assert pair.info.n_samples == {"test": counts[0] + counts[1]}
    assert pair.info.relabel == Relabel("pair", positive=1, negative=0)


def test_wrong_md5_on_a_modified_copy_of_a_real_file(tmp_path: Path) -> None:
    copy = tmp_path / "breastmnist.npz"
    shutil.copyfile(real_file("breastmnist"), copy)
    raw = bytearray(copy.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    copy.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="MD5 mismatch") as excinfo:
        load_split("breastmnist", "train", tmp_path)
    message = str(excinfo.value)
    assert REAL["breastmnist"][4] in message and md5_of(copy) in message
    assert copy.read_bytes() == bytes(raw)  # the user's file is left alone


# ---------------------------------------------------------------- MD5 handling


def test_wrong_md5_is_reported_and_file_kept(tmp_path: Path, breast_synthetic: Path) -> None:
    expected = md5_of(breast_synthetic)
    raw = bytearray(breast_synthetic.read_bytes())
    raw[-1] ^= 0x01
    breast_synthetic.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=f"expected {expected}, got {md5_of(breast_synthetic)}"):
        ensure_dataset_file("breastmnist", tmp_path)
    assert breast_synthetic.read_bytes() == bytes(raw)
    # verify_md5=False skips the check (synthetic test files).
    assert ensure_dataset_file("breastmnist", tmp_path, verify_md5=False) == breast_synthetic


def test_md5_is_cached_per_path_size_and_mtime(
    tmp_path: Path, breast_synthetic: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real_file_hash = pooch.file_hash

    def counting_file_hash(*args: object, **kwargs: object) -> str:
        calls.append(args)
        return real_file_hash(*args, **kwargs)

    monkeypatch.setattr(pooch, "file_hash", counting_file_hash)
    for _ in range(3):
        load_split("breastmnist", "val", tmp_path)
    assert len(calls) == 1
    stat = breast_synthetic.stat()
    os.utime(breast_synthetic, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    ensure_dataset_file("breastmnist", tmp_path)
    assert len(calls) == 2


# ---------------------------------------------------------------- missing file / download


def assert_actionable(message: str, info: DatasetInfo, path: Path) -> None:
    for fragment in (
        info.file_name,
        info.url,
        info.md5,
        str(path),
        "QHQCNN_DATA_DIR",
        "--data-dir",
    ):
        assert fragment in message


def test_missing_file_offline(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="downloading is disabled") as excinfo:
        load_split("breastmnist", "test", tmp_path, download=False)
    assert_actionable(str(excinfo.value), dataset_info("breastmnist"), tmp_path / "breastmnist.npz")
    assert list(tmp_path.iterdir()) == []


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{unused_port()}/breastmnist.npz"
    monkeypatch.setitem(_medmnist.INFO["breastmnist"], "url", url)
    with pytest.raises(DataError, match="Could not download") as excinfo:
        ensure_dataset_file("breastmnist", tmp_path)
    assert_actionable(str(excinfo.value), dataset_info("breastmnist"), tmp_path / "breastmnist.npz")
    assert not (tmp_path / "breastmnist.npz").exists()


def serve_synthetic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: tuple[str, dict]
) -> tuple[bytes, dict, Path]:
    """Patch breastmnist's URL/MD5 to a synthetic file on the local server."""
    base, routes = server
    body = write_npz(tmp_path / "source.npz").read_bytes()
    monkeypatch.setitem(_medmnist.INFO["breastmnist"], "url", f"{base}/breastmnist.npz")
    monkeypatch.setitem(_medmnist.INFO["breastmnist"], "MD5", hashlib.md5(body).hexdigest())
    target_dir = tmp_path / "data"
    return body, routes, target_dir


def test_download_good_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, http_server) -> None:
    body, routes, target_dir = serve_synthetic(tmp_path, monkeypatch, http_server)
    routes["/breastmnist.npz"] = (body, len(body))
    loaded = load_split("breastmnist", "train", target_dir)
    assert loaded.images.shape == (6, 28, 28, 1)
    assert (target_dir / "breastmnist.npz").read_bytes() == body
    assert sorted(p.name for p in target_dir.iterdir()) == ["breastmnist.npz"]
    routes.clear()  # now served from disk, no network needed
    assert load_split("breastmnist", "test", target_dir, download=False).labels.tolist() == [
        0,
        1,
        0,
        1,
        0,
        1,
    ]


@pytest.mark.parametrize("failure", ["wrong-md5", "dropped-connection", "not-found"])
def test_failed_download_leaves_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, http_server, failure: str
) -> None:
    body, routes, target_dir = serve_synthetic(tmp_path, monkeypatch, http_server)
    if failure == "wrong-md5":
        routes["/breastmnist.npz"] = (body + b"extra", len(body) + 5)
    elif failure == "dropped-connection":
        routes["/breastmnist.npz"] = (body[: len(body) // 2], len(body))
    with pytest.raises(DataError, match="Could not download") as excinfo:
        load_split("breastmnist", "test", target_dir)
    assert_actionable(
        str(excinfo.value), dataset_info("breastmnist"), target_dir / "breastmnist.npz"
    )
    assert not (target_dir / "breastmnist.npz").exists()
    leftovers = list(target_dir.iterdir()) if target_dir.exists() else []
    assert leftovers == []  # no partial or temporary file either


# ---------------------------------------------------------------- npz validation


def test_synthetic_file_loads_without_md5(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "breastmnist.npz")
    splits = load_npz_file(path, dataset_info("breastmnist"))
    assert set(splits) == set(SPLITS)
    assert splits["val"].images.shape == (6, 28, 28, 1)
    loaded = load_split("breastmnist", "val", tmp_path, download=False, verify_md5=False)
    np.testing.assert_array_equal(loaded.images, splits["val"].images)


def test_rgb_and_multi_label_synthetic(tmp_path: Path) -> None:
    rgb = write_npz(tmp_path / "blood.npz", **synthetic_arrays(channels=3, n_classes=8))
    loaded = load_npz_file(rgb, dataset_info("bloodmnist"), splits=["test"])["test"]
    assert loaded.images.shape == (6, 28, 28, 3)

    labels = np.random.default_rng(1).integers(0, 2, size=(6, 14), dtype=np.uint8)
    chest = write_npz(tmp_path / "chest.npz", train_labels=labels)
    loaded = load_npz_file(chest, dataset_info("chestmnist"), splits=["train"])["train"]
    assert loaded.labels.shape == (6, 14) and loaded.labels.dtype == np.int64
    np.testing.assert_array_equal(loaded.labels, labels)
    with pytest.raises(DataError, match=r"expected \(6, 14\)"):
        load_npz_file(chest, dataset_info("chestmnist"), splits=["val"])


def test_truncated_file(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "breastmnist.npz")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match=f"{path}.* not a readable .npz archive"):
        load_split("breastmnist", "train", tmp_path, download=False, verify_md5=False)


def test_corrupted_payload(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "breastmnist.npz", val_images=np.zeros((6, 28, 28), np.uint8))
    raw = bytearray(path.read_bytes())
    for offset in range(200, 1200, 50):  # inside the first (train_images) member's data
        raw[offset] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="not a readable .npz archive"):
        load_npz_file(path, dataset_info("breastmnist"), splits=["train"])


@pytest.mark.parametrize(
    "content",
    [b"this is not a zip file\n" * 10, b"", b"PK\x03\x04 broken zip header"],
    ids=["text", "empty", "bad-zip"],
)
def test_not_an_npz_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "breastmnist.npz"
    path.write_bytes(content)
    with pytest.raises(DataError, match=str(path)):
        load_split("breastmnist", "train", tmp_path, download=False, verify_md5=False)


def test_single_array_npy_file(tmp_path: Path) -> None:
    path = tmp_path / "breastmnist.npz"
    with path.open("wb") as handle:
        np.save(handle, np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(DataError, match="single array"):
        load_npz_file(path, dataset_info("breastmnist"))


def test_missing_keys(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "breastmnist.npz", test_labels=None, test_images=None)
    info = dataset_info("breastmnist")
    assert load_npz_file(path, info, splits=["train"])["train"].labels.shape == (6,)
    with pytest.raises(DataError, match="lacks test_images, test_labels .*has: train_images"):
        load_npz_file(path, info, splits=["test"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"train_images": np.zeros((6, 32, 32), np.uint8)}, r"shape \(6, 32, 32, 1\)"),
        ({"train_images": np.zeros((6, 28, 28, 3), np.uint8)}, r"expected \(N, 28, 28\)"),
        ({"train_images": np.zeros((6, 28), np.uint8)}, r"images have shape"),
        ({"train_images": np.zeros((6, 28, 28), np.float32)}, "must be uint8, got float32"),
        ({"train_labels": np.zeros((5, 1), np.uint8)}, "6 images but labels have shape"),
        ({"train_labels": np.zeros((6, 2), np.uint8)}, r"expected \(6, 1\)"),
        ({"train_labels": np.zeros((6, 1), np.float64)}, "labels must be integers"),
        ({"train_labels": np.full((6, 1), 2, np.uint8)}, r"span 2\.\.2, expected 0\.\.1"),
        ({"train_labels": np.full((6, 1), -1, np.int64)}, r"span -1\.\.-1"),
    ],
    ids=[
        "32x32",
        "rgb-for-gray",
        "2d",
        "float-images",
        "count-mismatch",
        "label-width",
        "float-labels",
        "label-too-big",
        "label-negative",
    ],
)
def test_malformed_arrays(tmp_path: Path, overrides: dict, message: str) -> None:
    write_npz(tmp_path / "breastmnist.npz", **overrides)
    with pytest.raises(DataError, match=message):
        load_split("breastmnist", "train", tmp_path, download=False, verify_md5=False)


def test_gray_file_for_rgb_dataset(tmp_path: Path) -> None:
    path = write_npz(tmp_path / "bloodmnist.npz")
    with pytest.raises(DataError, match=r"expected \(N, 28, 28, 3\)"):
        load_npz_file(path, dataset_info("bloodmnist"), splits=["train"])


def test_bad_split(tmp_path: Path) -> None:
    write_npz(tmp_path / "breastmnist.npz")
    with pytest.raises(ConfigError, match="valid splits: train, val, test"):
        load_split("breastmnist", "validation", tmp_path, download=False, verify_md5=False)
    with pytest.raises(ConfigError, match="Unknown split"):
        load_npz_file(tmp_path / "breastmnist.npz", dataset_info("breastmnist"), splits=["dev"])


# ---------------------------------------------------------------- relabelling


@pytest.mark.parametrize(
    ("text", "expected", "canonical"),
    [
        ("3", Relabel("one-vs-rest", 3), "ovr:3"),
        ("ovr:3", Relabel("one-vs-rest", 3), "ovr:3"),
        (" OVR : 3 ", Relabel("one-vs-rest", 3), "ovr:3"),
        ("one-vs-rest:0", Relabel("one-vs-rest", 0), "ovr:0"),
        ("0,1", Relabel("pair", positive=1, negative=0), "pair:0,1"),
        ("pair:5, 2", Relabel("pair", positive=2, negative=5), "pair:5,2"),
    ],
)
def test_relabel_parse_and_round_trip(text: str, expected: Relabel, canonical: str) -> None:
    relabel = Relabel.parse(text)
    assert relabel == expected
    assert str(relabel) == canonical
    assert Relabel.parse(str(relabel)) == relabel
    assert Relabel.from_dict(relabel.to_dict()) == relabel


@pytest.mark.parametrize(
    "text", ["", "x", "ovr:1,2", "pair:1", "pair:1,2,3", "foo:1", "-1", "1,1", "pair:2,2", "1.5"]
)
def test_relabel_parse_errors(text: str) -> None:
    with pytest.raises(ConfigError):
        Relabel.parse(text)


def test_relabel_construction_errors() -> None:
    with pytest.raises(ConfigError, match="Unknown relabel kind"):
        Relabel("ovo", 1)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="needs a negative"):
        Relabel("pair", 1)
    with pytest.raises(ConfigError, match="takes no negative"):
        Relabel("one-vs-rest", 1, 0)
    with pytest.raises(ConfigError, match="two different classes"):
        Relabel("pair", 1, 1)
    with pytest.raises(ConfigError):
        Relabel.from_dict({"kind": "pair", "positive": 1, "negative": 0, "extra": 1})
    with pytest.raises(ConfigError):
        Relabel.from_dict({"positive": 1})


def test_relabel_validation_against_dataset(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="out of range for bloodmnist.*0..7"):
        dataset_info("bloodmnist").relabelled(Relabel.parse("ovr:8"))
    with pytest.raises(ConfigError, match="class 2 is out of range"):
        dataset_info("breastmnist").relabelled(Relabel.parse("pair:0,2"))
    with pytest.raises(ConfigError, match="multi-label"):
        dataset_info("chestmnist").relabelled(Relabel.parse("ovr:0"))
    once = dataset_info("breastmnist").relabelled(Relabel.parse("ovr:1"))
    with pytest.raises(ConfigError, match="already relabelled"):
        once.relabelled(Relabel.parse("ovr:0"))
    # Validation happens before any file access.
    with pytest.raises(ConfigError, match="out of range"):
        load_split("breastmnist", "test", tmp_path, relabel="5", download=False)


def test_relabelled_info() -> None:
    retina = dataset_info("retinamnist")
    pair = retina.relabelled(Relabel.parse("pair:0,4"))
    assert pair.label_names == {0: retina.label_names[0], 1: retina.label_names[4]}
    assert (pair.task, pair.n_classes, pair.n_samples) == ("binary-class", 2, {})
    assert pair.file_name == "retinamnist.npz" and pair.md5 == retina.md5
    assert retina.relabelled(None) is retina


def test_relabel_apply() -> None:
    images = np.arange(6)[:, None]
    labels = np.array([[0], [1], [2], [3], [2], [0]], np.uint8)
    kept, binary = Relabel.parse("ovr:2").apply(images, labels)
    assert kept is images and binary.tolist() == [0, 0, 1, 0, 1, 0] and binary.dtype == np.int64
    kept, binary = Relabel.parse("pair:2,0").apply(images, labels[:, 0])
    assert kept[:, 0].tolist() == [0, 2, 4, 5] and binary.tolist() == [1, 0, 0, 1]
    with pytest.raises(ConfigError, match="multi-label"):
        Relabel.parse("ovr:0").apply(images, np.zeros((6, 3), np.int64))


# ---------------------------------------------------------------- import hygiene


def test_no_torchvision_and_nothing_printed(tmp_path: Path) -> None:
    write_npz(tmp_path / "breastmnist.npz")
    script = f"""
import sys
import qhqcnn.data.medmnist as data
from qhqcnn.data import medmnist_info as _medmnist
split = data.load_split("breastmnist", "test", {str(tmp_path)!r}, download=False, verify_md5=False)
assert len(split) == 6
assert _medmnist.getACC(split.labels, split.labels.astype(float), "binary-class") == 1.0
import medmnist
assert medmnist.INFO is _medmnist.INFO
assert "torchvision" not in sys.modules, "torchvision was imported"
"""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
