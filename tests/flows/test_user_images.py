"""Users' own images end to end (real Prefect, MLflow, DVC): a folder the test writes itself, one
sub-folder per class of PNG/JPEG files of mixed sizes and modes → `data add --images` → `train`
(tiny CNN) → a class forgotten and verified → records, named by their paths, deleted and relabelled
through the ledger and `comply`; an .npz of arrays; bad folders and arrays → exit 2, one line, nothing written."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import unlearning.images.files as image_files
from flows.cli import main
from tests.flows.conftest import project_root
from tests.flows.test_cli_bad_input import run_bad
from tests.image_folders import CLASSES, write_image_folder
from unlearning.images.data import _in_train, load_images

SIZE = 16  # ≤ 16 pixels: the tiny CNN preset by default


@pytest.fixture(scope="module")
def shapes_ws(tmp_path_factory, prefect_harness):
    """A workspace with data/shapes (3 classes × 60 images) and a tiny CNN `shapes` in production."""
    root = tmp_path_factory.mktemp("user-images")
    with project_root(root, chdir=True):
        write_image_folder(root / "incoming" / "shapes")
        assert main(["data", "add", "shapes", "--images", "incoming/shapes", "--size", str(SIZE)]) == 0
        assert main(["train", "shapes", "--epochs", "15"]) == 0
        yield root


def run_json(capsys, argv: list[str]) -> tuple[int, dict]:
    capsys.readouterr()
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def request(root: Path, **content) -> Path:
    path = root / f"{content['id']}.yaml"
    path.write_text(yaml.safe_dump({"model": "shapes", **content}))
    return path


# --- bad input: one line, exit 2, nothing written -------------------------------------------------

def truncated_png(folder: Path) -> None:
    raw = (folder / "disc" / "0000.png").read_bytes()
    (folder / "disc" / "0000.png").write_bytes(raw[: len(raw) // 2])


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header promises width × height grey pixels (its data is a few bytes)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def held_out_only_class(folder: Path) -> None:
    """A fourth class whose two images both fall in the held-out split by the id hash."""
    (folder / "ring").mkdir()
    names = [f"{i:04d}.png" for i in range(200) if not _in_train(f"ring/{i:04d}.png")][:2]
    for name in names:
        Image.new("L", (20, 20), 200).save(folder / "ring" / name)


ADDRESS = "maud.oakes@example.org"  # a file or an id named after a person: kept whole wherever ids are

FOLDERS = {
    "truncated": (truncated_png, "'disc/0000.png' is not a readable PNG or JPEG image"),
    "not an image": (lambda f: (f / "hstripes" / "notes.txt").write_text("hello"),
                     "'hstripes/notes.txt' is not a PNG or JPEG file"),
    "another format": (lambda f: Image.new("L", (20, 20)).save(f / "disc" / "0001.png", format="GIF"),
                       "'disc/0001.png' is not a readable PNG or JPEG image"),
    "text as .jpg": (lambda f: (f / "disc" / "fake.jpg").write_text("not a jpeg"), "'disc/fake.jpg' is not a readable"),
    "bomb": (lambda f: (f / "disc" / "big.png").write_bytes(png_header(9000, 9000)), "declares more than 50 million"),
    "pillow's bomb": (lambda f: (f / "disc" / "big.png").write_bytes(png_header(30000, 30000)),
                      "declares more than 50 million"),
    "outside a class": (lambda f: (f / "loose.png").write_bytes(b""), "'loose.png' lies directly in"),
    "comma in a name": (lambda f: (f / "disc" / "0000.png").rename(f / "disc" / "a,b.png"), "cannot be a record id"),
    "held-out class": (held_out_only_class, "class 'ring' of 'mine' has only held-out images"),
    "a class linked in": (lambda f: (f / "disc").symlink_to((f / "disc").rename(f.parent / "discs")),
                          "'disc' in mine/ is a link to a folder"),
    "e-mail in a name": (lambda f: (f / "disc" / "0000.png").rename(f / "disc" / f"{ADDRESS}.png"),
                         "path of image 5 of mine/ (in sorted order) holds personal data (email)"),  # after 0001..0004
    "e-mail as a class": (lambda f: (f / "disc").rename(f / ADDRESS), "holds personal data (email)"),
}


@pytest.mark.parametrize("spoil", list(FOLDERS))
def test_data_add_refuses_a_bad_image_folder(shapes_ws, capsys, tmp_path, spoil):
    folder = write_image_folder(tmp_path / "mine", per_class=5)
    damage, expect = FOLDERS[spoil]
    damage(folder)
    run_bad(shapes_ws, capsys, ["data", "add", "mine", "--images", str(folder)], expect)


def single_class(tmp_path: Path) -> Path:
    return write_image_folder(tmp_path / "mine", per_class=5, classes=("disc",))


def npz_file(path: Path) -> Path:
    np.savez(path, x=np.zeros((2, 8, 8), np.uint8), y=np.arange(2))
    return path


def empty(tmp_path: Path) -> Path:
    (tmp_path / "mine" / "disc" / ".thumbnails").mkdir(parents=True)
    (tmp_path / "mine" / "disc" / ".DS_Store").write_text("x")  # hidden files are skipped
    return tmp_path / "mine"


@pytest.mark.parametrize("make, extra, expect", [
    (single_class, [], "has one class ('disc')"),
    (empty, [], "no PNG or JPEG images in mine/"),
    (lambda p: p / "nowhere", [], "not found"),
    (lambda p: npz_file(p / "x.npz"), [], "is a file, not a folder"),
    (lambda p: write_image_folder(p / "mine", per_class=5), ["--size", "4"], "--size must be a whole number of pixels"),
    (lambda p: write_image_folder(p / "mine", per_class=5), ["--target", "label"], "drop --target/--id"),
    (lambda p: write_image_folder(p / "mine", per_class=5), ["--file", "x.npz"], "not both"),
    (lambda p: write_image_folder(p / "mine", per_class=1), [], "'mine' is too small to train"),
], ids=["single class", "no images", "missing folder", "a file", "size too small", "--target", "--file too", "too few"])
def test_data_add_refuses_a_bad_image_folder_as_a_whole(shapes_ws, capsys, tmp_path, make, extra, expect):
    run_bad(shapes_ws, capsys, ["data", "add", "mine", "--images", str(make(tmp_path)), *extra], expect)


def test_data_add_refuses_too_many_files_before_decoding_any(shapes_ws, capsys, tmp_path, monkeypatch):
    folder = write_image_folder(tmp_path / "mine", per_class=5)
    (folder / "disc" / "0000.png").write_bytes(b"corrupt, but never read")
    monkeypatch.setattr(image_files, "MAX_IMAGES", 12)
    run_bad(shapes_ws, capsys, ["data", "add", "mine", "--images", str(folder)], "holds more than 12 image files")


def arrays(n: int = 40, **override) -> dict:
    rng = np.random.default_rng(0)
    content = {"x": rng.integers(0, 256, size=(n, 12, 12), dtype=np.uint8), "y": np.arange(n) % 2}
    return {k: v for k, v in (content | override).items() if v is not None}


NPZ = {
    "x/y lengths": (arrays(y=np.arange(39) % 2), "y in bad.npz has shape (39,) but x holds 40 images"),
    "float pixels": (arrays(x=np.zeros((40, 12, 12), np.float32)), "x in bad.npz is float32; give uint8"),
    "float labels": (arrays(y=np.arange(40) * 0.5), "y in bad.npz is float64"),
    "one class": (arrays(y=np.zeros(40, int)), "y in bad.npz has one class"),
    "duplicate ids": (arrays(ids=np.array(["a", "b"] * 20)), "ids in bad.npz repeat 'a'"),
    "pickled ids": (arrays(ids=np.array([f"r{i}" for i in range(40)], dtype=object)), "an array holds Python objects"),
    "no y": (arrays(y=None), "give exactly 'x' and 'y'"),
    "an extra array": (arrays(split=np.ones(40, bool)), "(unexpected: split)"),
    "a flat x": (arrays(x=np.zeros((40, 144), np.uint8)), "x in bad.npz has shape (40, 144)"),
    "huge images": (arrays(n=2, x=np.zeros((2, 8, 300), np.uint8), y=np.arange(2)), "are 300x8; give sides"),
    "a line break in a class": (arrays(y=np.array(["cat", "dog\r\nfood"])[np.arange(40) % 2]),
                                "y in bad.npz has a class name with a line break"),
    "e-mail ids": (arrays(ids=np.array([f"r{i}" for i in range(39)] + [ADDRESS])),
                   "id 40 of the array ids in bad.npz holds personal data (email)"),
    "duplicated e-mail ids": (arrays(ids=np.array([ADDRESS] * 40)), "holds personal data (email)"),
    # class names go into every model version and MLflow; the one-class message quoted it
    "an e-mail as a class": (arrays(y=np.array(["cat", ADDRESS])[np.arange(40) % 2]),
                             "class 2 of y in bad.npz (in sorted order) holds personal data (email): class names"),
    "one class, an e-mail": (arrays(y=np.array([ADDRESS] * 40)), "class 1 of y in bad.npz"),
}


@pytest.mark.parametrize("case", list(NPZ))
def test_data_add_refuses_bad_arrays(shapes_ws, capsys, tmp_path, case):
    content, expect = NPZ[case]
    np.savez(tmp_path / "bad.npz", **content)
    run_bad(shapes_ws, capsys, ["data", "add", "bad", "--file", str(tmp_path / "bad.npz")], expect)


@pytest.mark.parametrize("case", ["duplicated e-mail ids", "e-mail in a name"])
def test_an_image_id_holding_an_e_mail_address_is_never_printed(shapes_ws, capsys, tmp_path, case):
    """Image ids (paths, or the npz's ids) go whole into certificates and the append-only ledger, as
    tables' and text's --id columns, which refuse personal values: images took them (and the
    duplicate-id message quoted one)."""
    if case in NPZ:
        np.savez(tmp_path / "bad.npz", **NPZ[case][0])
        argv = ["data", "add", "bad", "--file", str(tmp_path / "bad.npz")]
    else:
        FOLDERS[case][0](write_image_folder(tmp_path / "mine", per_class=5))
        argv = ["data", "add", "mine", "--images", str(tmp_path / "mine")]
    capsys.readouterr()
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert "personal data (email)" in err and ADDRESS not in out + err


def test_data_add_refuses_an_npz_that_is_not_one(shapes_ws, capsys, tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 truncated")
    run_bad(shapes_ws, capsys, ["data", "add", "bad", "--file", str(tmp_path / "bad.npz")], "cannot read 'bad.npz'")
    np.savez(tmp_path / "ok.npz", **arrays())
    run_bad(shapes_ws, capsys, ["data", "add", "bad", "--file", str(tmp_path / "ok.npz"), "--size", "16"],
            "--size applies to an image folder")


def test_scan_of_an_image_dataset_says_it_scans_tables_and_text(shapes_ws, capsys):
    """It ended in an AttributeError traceback (an ImageDataset has no .frame), built-ins too."""
    run_bad(shapes_ws, capsys, ["scan", "shapes"], "dataset 'shapes' holds images: scan finds secrets in tables")


# --- after the refusals: once a forget has created .unlearn/project.lock, every `data add`, a refused
# one too, takes the lock and writes its pid there, which the snapshots above would count as a change

def test_an_image_folder_is_added_trained_forgotten_and_verified(shapes_ws, capsys):
    data = load_images(shapes_ws / "data" / "shapes")
    assert data.classes == CLASSES and data.images.shape == (180, 1, SIZE, SIZE)
    assert data.record_ids[:2] == ("disc/0000.png", "disc/0001.jpg")
    assert main(["data", "add", "shapes", "--images", "incoming/shapes", "--size", str(SIZE)]) == 0  # same: no-op

    # a class forgotten: every training image of it leaves the data, the update is verified by
    # evidence (the default): the class is no longer predicted, on its training or held-out images
    code, out = run_json(capsys, ["forget", str(request(shapes_ws, id="IMG-U1", forget_class="vstripes"))])
    assert code == 0 and out["verified"] and out["promoted"] and out["forget_class"] == "vstripes", out
    rows = {r["method"]: r for r in out["results"]}
    assert "retrain" not in rows and out["timings"]["retrain_s"] is None and rows[out["method"]]["ua"] >= 90
    checks = {c["name"]: c for c in out["checks"]}
    assert checks["forgotten_class_accuracy"]["passed"] and checks["forgotten_class_heldout_accuracy"]["passed"]
    after = load_images(shapes_ws / "data" / "shapes")
    vstripes = after.labels == CLASSES.index("vstripes")
    assert not (after.train & vstripes).any() and (~after.train & vstripes).any()

    # records named by their paths, one deleted and one relabelled, through the ledger and `comply`
    record, relabel = [i for i, t in zip(after.record_ids, after.train) if t and i.startswith("hstripes/")][:2]
    for path in (request(shapes_ws, id="IMG-U2", delete_records=[record]),
                 request(shapes_ws, id="IMG-U3", fix_labels={relabel: "disc"})):
        code, out = run_json(capsys, ["requests", "submit", str(path)])
        assert code == 0, out
    code, out = run_json(capsys, ["comply"])
    assert code == 0 and {r["id"]: r["status"] for r in out["requests"]} == {"IMG-U2": "completed",
                                                                            "IMG-U3": "completed"}, out
    final = load_images(shapes_ws / "data" / "shapes")
    assert record not in final.record_ids
    assert final.classes[final.labels[final.record_ids.index(relabel)]] == "disc"


def test_an_npz_of_arrays_is_added_with_its_ids(shapes_ws, capsys, tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(60, 12, 10, 3), dtype=np.uint8)  # RGB, channels last
    y = np.array(["cat", "dog"] * 30)
    np.savez(tmp_path / "pets.npz", x=x, y=y, ids=np.array([f"pet-{i}" for i in range(60)]))
    code, out = run_json(capsys, ["data", "add", "pets", "--file", str(tmp_path / "pets.npz")])
    assert code == 0 and out["kind"] == "images" and out["classes"] == ["cat", "dog"] and out["shape"] == [1, 12, 10]
    pets = load_images(shapes_ws / "data" / "pets")
    grey = np.rint(x @ np.array([0.299, 0.587, 0.114]))
    assert np.array_equal(pets.images[:, 0], grey) and pets.record_ids[7] == "pet-7"
