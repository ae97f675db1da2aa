"""Public-dataset loaders on tiny fixtures written here in each release's exact layout and naming,
loaded end to end through the registry; cache hit/miss/invalidation; every bad-input case."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from segarena.platform.conformance import DatasetConformance
from segarena.platform.errors import DataError
from segarena.platform.plugins.registry import discover

RNG = np.random.default_rng(0)
REGISTRY = discover(use_env=False)


# fixture writers ------------------------------------------------------------------------
def blob(h: int = 40, w: int = 48, seed: int = 0) -> np.ndarray:
    """A bool ellipse at a seeded position: the lesion / organ of every fixture."""
    r = np.random.default_rng(seed)
    cy, cx = r.uniform(0.35, 0.65) * h, r.uniform(0.35, 0.65) * w
    yy, xx = np.mgrid[:h, :w]
    return ((yy - cy) / (0.25 * h)) ** 2 + ((xx - cx) / (0.2 * w)) ** 2 < 1


def photo(mask: np.ndarray, rgb: bool = True) -> np.ndarray:
    img = (60 + 120 * mask + RNG.integers(0, 40, mask.shape)).astype(np.uint8)
    return np.stack([img, img // 2, img // 3], -1) if rgb else img


def save(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def save_nii(path: Path, arr: np.ndarray, zooms=(1.0, 1.0, 2.0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(arr, np.diag([*zooms, 1.0]))
    img.header.set_zooms(zooms)
    nib.save(img, str(path))
    return path


def pair(img_path: Path, mask_path: Path, seed: int, rgb: bool = True, fg: int = 255) -> None:
    m = blob(seed=seed)
    save(img_path, photo(m, rgb))
    save(mask_path, (m * fg).astype(np.uint8))


def make_isic2016(root: Path) -> Path:
    for mode, n in (("Training", 5), ("Test", 2)):
        for i in range(n):
            cid = f"ISIC_{i + (0 if mode == 'Training' else 9000):07d}"
            pair(root / f"ISBI2016_ISIC_Part1_{mode}_Data/{cid}.jpg",
                 root / f"ISBI2016_ISIC_Part1_{mode}_GroundTruth/{cid}_Segmentation.png", i)
    return root


def make_isic2018(root: Path) -> Path:
    for mode, n in (("Training", 5), ("Validation", 1), ("Test", 2)):
        inputs = root / f"ISIC2018_Task1-2_{mode}_Input"
        for i in range(n):
            cid = f"ISIC_{i + 100 * len(mode):07d}"
            pair(inputs / f"{cid}.jpg", root / f"ISIC2018_Task1_{mode}_GroundTruth/{cid}_segmentation.png", i)
        (inputs / "LICENSE.txt").write_text("CC-BY-NC")
        (inputs / "ATTRIBUTION.txt").write_text("ISIC")
    return root


def refuge_mask(seed: int, h: int = 40, w: int = 48) -> np.ndarray:
    disc = blob(h, w, seed)
    cup = disc & np.roll(blob(h, w, seed), 0) & (np.add.outer(np.arange(h), np.arange(w)) % 3 > 0)
    return np.where(cup, 0, np.where(disc, 128, 255)).astype(np.uint8)


def make_refuge(root: Path) -> Path:
    layout = [("Training400/Glaucoma/g0001.jpg", "Annotation-Training400/Disc_Cup_Masks/Glaucoma/g0001.bmp"),
              ("Training400/Non-Glaucoma/n0001.jpg", "Annotation-Training400/Disc_Cup_Masks/Non-Glaucoma/n0001.bmp"),
              ("Training400/Non-Glaucoma/n0002.jpg", "Annotation-Training400/Disc_Cup_Masks/Non-Glaucoma/n0002.bmp"),
              ("REFUGE-Validation400/V0001.jpg", "REFUGE-Validation400-GT/Disc_Cup_Masks/V0001.bmp"),
              ("REFUGE-Test400/T0001.jpg", "REFUGE-Test-GT/Disc_Cup_Masks/G/T0001.bmp"),
              ("REFUGE-Test400/T0002.jpg", "REFUGE-Test-GT/Disc_Cup_Masks/N/T0002.bmp")]
    for i, (img, msk) in enumerate(layout):
        m = refuge_mask(i)
        save(root / img, photo(m < 255))
        save(root / msk, m)
    return root


def make_brats(root: Path, n: int = 3, shape=(12, 12, 5)) -> Path:
    for i in range(n):
        cid = f"BraTS2021_{i:05d}"
        seg = np.zeros(shape, np.int16)
        seg[3:9, 3:9, 1:4] = 2
        seg[4:8, 4:8, 2:4] = 1
        seg[5:7, 5:7, 2] = 4
        for mod in ("flair", "t1", "t1ce", "t2", "seg"):
            data = seg if mod == "seg" else (seg * 50 + RNG.normal(100, 5, shape)).astype(np.float32)
            save_nii(root / "BraTS2021_Training_Data" / cid / f"{cid}_{mod}.nii.gz", data, (1.0, 1.0, 1.0))
    return root


def make_btcv(root: Path, cases=(1, 2, 5, 6, 7), shape=(16, 16, 4)) -> Path:
    for k in cases:
        lab = np.zeros(shape, np.uint8)
        lab[2:8, 2:8, :] = 6  # liver
        lab[9:13, 9:13, 1:3] = 1  # spleen
        lab[10:12, 2:4, :] = 8  # aorta
        img = np.where(lab > 0, 60.0, -500.0) + RNG.normal(0, 10, shape)
        save_nii(root / f"RawData/Training/img/img{k:04d}.nii.gz", img.astype(np.float32), (0.8, 0.8, 3.0))
        save_nii(root / f"RawData/Training/label/label{k:04d}.nii.gz", lab, (0.8, 0.8, 3.0))
    return root


def make_kvasir(root: Path) -> Path:
    for i, cid in enumerate(["cju0qkwl35piu0993l0dewei2", "cju0qoxqj9q6s0835b43399p4", "cju0roawvklrq0799vmjorwfv",
                             "cju0rx1idathl0835detmsp84", "cju0s2a9ekvms080138tjjpxr", "cju0s690hkp960855tjuaqvv0"]):
        pair(root / f"Kvasir-SEG/images/{cid}.jpg", root / f"Kvasir-SEG/masks/{cid}.jpg", i)
    (root / "Kvasir-SEG/kavsir_bboxes.json").write_text("{}")
    return root


def make_cvc(root: Path) -> Path:
    for i in range(1, 7):
        pair(root / f"CVC-ClinicDB/Original/{i}.tif", root / f"CVC-ClinicDB/Ground Truth/{i}.tif", i)
    return root


def make_busi(root: Path) -> Path:
    base = root / "Dataset_BUSI_with_GT"
    for cls, n in (("benign", 3), ("malignant", 2), ("normal", 2)):
        for i in range(1, n + 1):
            m = blob(seed=i) if cls != "normal" else np.zeros((40, 48), bool)
            save(base / cls / f"{cls} ({i}).png", photo(m))  # 3-channel grey in the release
            save(base / cls / f"{cls} ({i})_mask.png", (m * 255).astype(np.uint8))
    extra = np.zeros((40, 48), np.uint8)
    extra[2:6, 2:6] = 255
    save(base / "benign" / "benign (1)_mask_1.png", extra)
    return root


def aperio_xml(path: Path, m: np.ndarray) -> None:
    ys, xs = np.nonzero(m)
    y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
    verts = "".join(f'<Vertex X="{x}" Y="{y}" Z="0"/>' for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1)))
    path.write_text(f'<?xml version="1.0"?><Annotations><Annotation Id="1"><Regions><Region Id="1">'
                    f"<Vertices>{verts}</Vertices></Region></Regions></Annotation></Annotations>")


def make_monuseg(root: Path) -> Path:
    train = root / "MoNuSeg 2018 Training Data"
    for i, cid in enumerate(["TCGA-18-5592-01Z-00-DX1", "TCGA-21-5784-01Z-00-DX1", "TCGA-21-5786-01Z-00-DX1",
                             "TCGA-38-6178-01Z-00-DX1"]):
        m = blob(48, 48, i)
        save(train / "Tissue Images" / f"{cid}.tif", photo(m))
        (train / "Annotations").mkdir(parents=True, exist_ok=True)
        aperio_xml(train / "Annotations" / f"{cid}.xml", m)
    for i, cid in enumerate(["TCGA-2Z-A9J9-01A-01-TS1", "TCGA-44-2665-01B-06-BS6"]):
        m = blob(48, 48, 10 + i)
        save(root / "MoNuSegTestData" / f"{cid}.tif", photo(m))
        aperio_xml(root / "MoNuSegTestData" / f"{cid}.xml", m)
    return root


def make_glas(root: Path) -> Path:
    rows = ["name,patient ID,grade (GlaS),grade (Sirinukunwattana et al. 2015)"]
    names = [f"train_{i}" for i in range(1, 6)] + ["testA_1", "testA_2", "testB_1"]
    for k, name in enumerate(names):
        m = blob(seed=k)
        save(root / f"{name}.bmp", photo(m))
        save(root / f"{name}_anno.bmp", (m * (1 + k % 3)).astype(np.uint8))  # instance ids
        rows.append(f"{name},{1 + k // 2},benign,adenomatous")
    (root / "Grade.csv").write_text("\n".join(rows) + "\n")
    return root


def make_ddti(root: Path) -> Path:
    for sub, ids in (("training", range(1, 6)), ("test", range(6, 8))):
        for i in ids:
            pair(root / f"DDTI/images/{sub}/{i}.PNG", root / f"DDTI/annotations/{sub}/{i}.PNG", i, rgb=False, fg=1)
    return root


def make_folder(root: Path) -> Path:
    for sub, n in (("train", 4), ("val", 1), ("test", 2)):
        for i in range(n):
            m = blob(seed=i + 7 * len(sub))
            labels = (m * 1 + (m & (np.arange(48) > 24)[None]) * 1).astype(np.uint8)  # classes 1 and 2
            save(root / sub / "images" / f"{sub}{i}.png", photo(m))
            save(root / sub / "masks" / f"{sub}{i}.png", labels)
    (root / "dataset.json").write_text(json.dumps({"name": "demo", "classes": ["lesion", "core"],
                                                   "spacing": [0.5, 0.5], "modality": "demo"}))
    return root


FIXTURES = {"isic2016": make_isic2016, "isic2018": make_isic2018, "refuge": make_refuge, "brats2021": make_brats,
            "btcv": make_btcv, "kvasir-seg": make_kvasir, "cvc-clinicdb": make_cvc, "busi": make_busi,
            "monuseg": make_monuseg, "glas": make_glas, "ddti": make_ddti, "folder": make_folder}


def fixture_root(name: str, tmp: Path) -> Path:
    return FIXTURES[name](tmp / name)


def load(name: str, root: Path, cache: Path, **params):
    ds = REGISTRY.dataset(name)(root=root, cache_dir=cache, **{"size": 32, **params})
    return ds, ds.cases()


# conformance on every loader, through the registry ---------------------------------------
class _PublicConformance(DatasetConformance):
    """Builds the loader's fixture once per class; the class comes from the registry."""

    name: ClassVar[str]

    def dataset_params(self):
        cls = type(self)
        if "_root" not in vars(cls):
            import tempfile

            cls._root = fixture_root(self.name, Path(tempfile.mkdtemp(prefix="segarena-fixture-")))
        return {"root": cls._root, "size": 32}


CONFORMANCE = {name: type(f"Test{name.title().replace('-', '')}Conformance", (_PublicConformance,),
                          {"name": name, "dataset_cls": REGISTRY.dataset(name)}) for name in FIXTURES}
globals().update({cls.__name__: cls for cls in CONFORMANCE.values()})


# loader-specific facts ------------------------------------------------------------------
def test_isic2016_official_split_and_both_layouts(tmp_path):
    ds, cases = load("isic2016", make_isic2016(tmp_path / "a"), tmp_path / "c")
    split = ds.split(0)
    assert split.kind == "official" and sorted(split.test) == ["ISIC_0009000", "ISIC_0009001"]
    assert len(split.train) + len(split.val) == 5 and cases[0].image.shape == (3, 32, 32)
    # MedSegDiff's CSV layout (index, image path, mask path), masks next to images
    root = tmp_path / "csv"
    rows = [",img,seg"]
    for i, mode in enumerate(("Training", "Training", "Test")):
        cid = f"ISIC_{i:07d}"
        pair(root / f"ISBI2016_ISIC_Part3B_{mode}_Data/{cid}.jpg",
             root / f"ISBI2016_ISIC_Part3B_{mode}_Data/{cid}_Segmentation.png", i)
    for mode, ids in (("Training", (0, 1)), ("Test", (2,))):
        lines = rows + [f"{k},ISBI2016_ISIC_Part3B_{mode}_Data/ISIC_{i:07d}.jpg,"
                        f"ISBI2016_ISIC_Part3B_{mode}_Data/ISIC_{i:07d}_Segmentation.png" for k, i in enumerate(ids)]
        (root / f"ISBI2016_ISIC_Part3B_{mode}_GroundTruth.csv").write_text("\n".join(lines))
    ds2, cases2 = load("isic2016", root, tmp_path / "c2")
    assert len(cases2) == 3 and ds2.split(0).test == ("ISIC_0000002",)


def test_isic2018_ignores_licence_files_and_uses_validation(tmp_path):
    ds, cases = load("isic2018", make_isic2018(tmp_path / "r"), tmp_path / "c")
    split = ds.split(1)
    assert len(cases) == 8 and (len(split.train), len(split.val), len(split.test)) == (5, 1, 2)


def test_refuge_encoding_and_targets(tmp_path):
    root = make_refuge(tmp_path / "r")
    ds, cases = load("refuge", root, tmp_path / "c")
    assert ds.task().class_names == ("disc", "cup") and not ds.task().exclusive
    disc, cup = cases[0].mask
    assert cup.any() and bool((cup <= disc).all()) and disc.sum() > cup.sum()
    assert ds.split(0).kind == "official" and set(ds.split(0).test) == {"T0001", "T0002"}
    _, cup_only = load("refuge", root, tmp_path / "c", target="cup")
    assert torch.equal(cup_only[0].mask[0], cup)
    merged, _ = load("refuge", root, tmp_path / "c", merge_val=True)
    merged_split = merged.split(0)
    assert "V0001" in merged_split.train + merged_split.val and "V0001" not in merged_split.test
    # SDSeg crops, inverted convention: cup = G channel == 255
    crops = tmp_path / "crops"
    for cid in ("g0001", "T0001"):
        inv = 255 - refuge_mask(3)
        save(crops / "Train_crop/images" / f"{cid}.png", photo(inv > 0))
        save(crops / "Train_crop/masks" / f"{cid}.png", np.stack([inv, inv, inv], -1))
    inv_ds, inv_cases = load("refuge", crops, tmp_path / "c3", encoding="inverted")
    assert inv_ds.split(0).test == ("T0001",) and inv_cases[0].mask[1].any()


def test_brats_regions_volume_slices_and_spacing(tmp_path):
    ds, cases = load("brats2021", make_brats(tmp_path / "r"), tmp_path / "c", target="regions")
    assert ds.task().in_channels == 4 and ds.task().class_names == ("whole_tumour", "tumour_core",
                                                                    "enhancing_tumour")
    assert len(cases) == 3 * 5 and {c.volume for c in cases} == {f"BraTS2021_{i:05d}" for i in range(3)}
    c = next(c for c in cases if c.slice_index == 2)
    wt, tc, et = c.mask
    assert et.any() and bool((et <= tc).all()) and bool((tc <= wt).all()) and wt.sum() > tc.sum()
    assert c.spacing == pytest.approx((12 / 32, 12 / 32, 1.0))
    split = ds.split(0)
    for part in (split.train, split.val, split.test):  # whole volumes per split (patient grouping)
        vols = {i.rsplit("_", 1)[0] for i in part}
        assert all(all(f"{v}_z{z:03d}" in part for z in range(5)) for v in vols)


def test_btcv_synapse_lists_and_organs(tmp_path):
    ds, cases = load("btcv", make_btcv(tmp_path / "r"), tmp_path / "c")
    split = ds.split(0)
    assert split.kind == "official"
    assert {i.split("_")[0] for i in split.test} == {"case0001", "case0002"}
    assert ds.task().num_classes == 8 and ds.task().class_names[4] == "liver"
    c = cases[1]
    assert c.mask[4].any() and c.mask[6].any() and not c.mask[1].any()  # liver, spleen; no gallbladder
    assert float(c.image.max()) <= 1.0 and float(c.image.min()) >= 0.0  # HU window
    _, binary = load("btcv", tmp_path / "r", tmp_path / "c", organs=["liver"])
    assert binary[0].mask.shape[0] == 1


def test_busi_extra_masks_united_and_normal_empty(tmp_path):
    _, cases = load("busi", make_busi(tmp_path / "r"), tmp_path / "c")
    by_id = {c.case_id: c for c in cases}
    assert set(by_id) >= {"benign_1", "malignant_2", "normal_1"} and len(cases) == 7
    assert not by_id["normal_1"].mask.any() and by_id["benign_1"].image.shape[0] == 1
    _, single = load("busi", tmp_path / "r", tmp_path / "c2", size=48, fit="pad")
    assert bool(single[0].mask[0, 8:12, 2:6].any())  # the _mask_1 square survives (pad = no resampling)


def test_monuseg_polygons_rasterised_and_official_split(tmp_path):
    ds, cases = load("monuseg", make_monuseg(tmp_path / "r"), tmp_path / "c")
    assert ds.split(0).kind == "official" and len(ds.split(0).test) == 2
    assert all(0.05 < float(c.mask.float().mean()) < 0.6 for c in cases)
    tiled, tiles = load("monuseg", tmp_path / "r", tmp_path / "c", tile=24)
    assert len(tiles) == 6 * 4 and all(c.group for c in tiles)
    split = tiled.split(0)
    groups = {c.case_id: c.group for c in tiles}
    assert not ({groups[i] for i in split.train} & {groups[i] for i in split.test})


def test_glas_official_split_instances_and_patients(tmp_path):
    ds, cases = load("glas", make_glas(tmp_path / "r"), tmp_path / "c")
    assert sorted(ds.split(0).test) == ["testA_1", "testA_2", "testB_1"]
    assert all(c.mask.any() for c in cases) and cases[0].group.startswith("patient")
    only_b, _ = load("glas", tmp_path / "r", tmp_path / "c", test_set="B")
    assert only_b.split(0).test == ("testB_1",)


def test_folder_multiclass_spacing_and_subsets(tmp_path):
    ds, cases = load("folder", make_folder(tmp_path / "r"), tmp_path / "c")
    task = ds.task()
    assert task.class_names == ("lesion", "core") and task.num_classes == 2
    assert cases[0].spacing == pytest.approx((0.5 * 40 / 32, 0.5 * 48 / 32))
    assert any(c.mask[1].any() for c in cases) and ds.split(0).kind == "official"


def test_ddti_tud_layout_labels_zero_one(tmp_path):
    ds, cases = load("ddti", make_ddti(tmp_path / "r"), tmp_path / "c")
    assert len(cases) == 7 and all(c.mask.any() for c in cases) and len(ds.split(0).test) == 2


def test_kvasir_and_cvc_groups(tmp_path):
    ds, cases = load("kvasir-seg", make_kvasir(tmp_path / "k"), tmp_path / "c")
    assert len(cases) == 6 and ds.split(0).kind == "seeded"
    root = make_cvc(tmp_path / "cvc")
    seq = tmp_path / "seq.csv"
    seq.write_text("frame,sequence\n1,1\n2,1\n3,1\n4,2\n5,2\n6,3\n")
    cvc, frames = load("cvc-clinicdb", root, tmp_path / "c", sequences=str(seq))
    split = cvc.split(0)
    assert {frames[0].group, frames[3].group} == {"seq1", "seq2"}
    for part in (split.train, split.val, split.test):
        if "1" in part:
            assert {"2", "3"} <= set(part)


# cache hit / miss / invalidation ------------------------------------------------------------
def test_cache_hit_miss_and_invalidation(tmp_path, monkeypatch):
    root, cache = make_isic2018(tmp_path / "r"), tmp_path / "c"
    cls = REGISTRY.dataset("isic2018")
    first = cls(root=root, cache_dir=cache, size=32)
    assert first.cache_status() == "not cached"
    cases = first.cases()
    assert first.cache_status().startswith("cached")
    reads = []
    import segarena.datasets.photos as photos

    monkeypatch.setattr(photos, "read_image", lambda p, *a: reads.append(p) or np.asarray(Image.open(p)))
    again = cls(root=root, cache_dir=cache, size=32).cases()  # hit: no source file decoded
    assert reads == [] and all(torch.equal(a.image, b.image) for a, b in zip(cases, again))
    bigger = cls(root=root, cache_dir=cache, size=48)  # config change: miss
    assert bigger.content_hash() != first.content_hash() and bigger.cache_status() == "not cached"
    bigger.cases()
    assert len(reads) == 8
    target = root / "ISIC2018_Task1_Training_GroundTruth/ISIC_0000800_segmentation.png"
    save(target, (blob(seed=99) * 255).astype(np.uint8))  # changed file: miss
    changed = cls(root=root, cache_dir=cache, size=32)
    assert changed.content_hash() != first.content_hash() and changed.cache_status() == "not cached"
    first.split(0), changed.split(0)  # splits are keyed by the content hash as well
    assert len(list((cache / "splits").glob("isic2018-*-seed0.json"))) == 2


# bad input: one clear error naming the file, no partial cache ------------------------------
def _error(name: str, root: Path, cache: Path, **params) -> str:
    with pytest.raises(DataError) as info:
        load(name, root, cache, **params)
    return str(info.value)


def test_missing_root_and_subfolder(tmp_path, monkeypatch):
    monkeypatch.delenv("SEGARENA_ISIC2018_ROOT", raising=False)
    with pytest.raises(DataError, match=r"path:.*SEGARENA_ISIC2018_ROOT"):
        REGISTRY.dataset("isic2018")(cache_dir=tmp_path).cases()
    assert "does not exist" in _error("isic2018", tmp_path / "nowhere", tmp_path / "c")
    root = make_isic2018(tmp_path / "r")
    import shutil

    shutil.rmtree(root / "ISIC2018_Task1_Training_GroundTruth")
    assert "ISIC2018_Task1_Training_GroundTruth is missing" in _error("isic2018", root, tmp_path / "c")
    monkeypatch.setenv("SEGARENA_KVASIR_ROOT", str(make_kvasir(tmp_path / "k")))
    assert len(REGISTRY.dataset("kvasir-seg")(cache_dir=tmp_path / "c", size=32).cases()) == 6  # env root


def test_image_without_mask_and_mask_without_image(tmp_path):
    root = make_kvasir(tmp_path / "k")
    orphan = save(root / "Kvasir-SEG/images/extra.jpg", photo(blob()))
    assert str(orphan) in _error("kvasir-seg", root, tmp_path / "c") and "has no mask" in _error(
        "kvasir-seg", root, tmp_path / "c")
    orphan.unlink()
    lone = save(root / "Kvasir-SEG/masks/lonely.jpg", (blob() * 255).astype(np.uint8))
    msg = _error("kvasir-seg", root, tmp_path / "c")
    assert str(lone) in msg and "has no image" in msg
    brats = make_brats(tmp_path / "b", n=1)
    seg = brats / "BraTS2021_Training_Data/BraTS2021_00000/BraTS2021_00000_seg.nii.gz"
    seg.unlink()
    assert "has no mask" in _error("brats2021", brats, tmp_path / "c")


def test_size_mismatch(tmp_path):
    root = make_busi(tmp_path / "r")
    bad = save(root / "Dataset_BUSI_with_GT/malignant/malignant (1)_mask.png", np.zeros((20, 20), np.uint8))
    msg = _error("busi", root, tmp_path / "c")
    assert str(bad) in msg and "differs" in msg
    assert not (tmp_path / "c" / "cases").exists() or not list((tmp_path / "c" / "cases").iterdir())


def test_unreadable_and_truncated_files(tmp_path):
    root = make_isic2016(tmp_path / "r")
    target = root / "ISBI2016_ISIC_Part1_Training_Data/ISIC_0000002.jpg"
    target.write_bytes(target.read_bytes()[:200])
    msg = _error("isic2016", root, tmp_path / "c")
    assert str(target) in msg and "unreadable or truncated" in msg
    garbage = root / "ISBI2016_ISIC_Part1_Training_Data/ISIC_0000002.jpg"
    garbage.write_bytes(b"not an image at all")
    assert str(garbage) in _error("isic2016", root, tmp_path / "c")
    brats = make_brats(tmp_path / "b", n=1)
    vol = brats / "BraTS2021_Training_Data/BraTS2021_00000/BraTS2021_00000_t1.nii.gz"
    vol.write_bytes(vol.read_bytes()[:100])
    assert str(vol) in _error("brats2021", brats, tmp_path / "c")
    xml = make_monuseg(tmp_path / "m") / "MoNuSegTestData/TCGA-2Z-A9J9-01A-01-TS1.xml"
    xml.write_text("<Annotations><Region>")
    assert str(xml) in _error("monuseg", tmp_path / "m", tmp_path / "c")


def test_mask_values_outside_label_set(tmp_path):
    root = make_isic2018(tmp_path / "r")
    bad = root / "ISIC2018_Task1_Training_GroundTruth/ISIC_0000801_segmentation.png"
    arr = (blob(seed=1) * 255).astype(np.uint8)
    arr[:3, :3] = 128  # 0/128/255 where binary is declared
    save(bad, arr)
    msg = _error("isic2018", root, tmp_path / "c")
    assert str(bad) in msg and "{128}" in msg
    refuge = make_refuge(tmp_path / "f")
    bmp = refuge / "REFUGE-Validation400-GT/Disc_Cup_Masks/V0001.bmp"
    save(bmp, np.full((40, 48), 77, np.uint8))
    assert str(bmp) in _error("refuge", refuge, tmp_path / "c")
    brats = make_brats(tmp_path / "b", n=1)
    seg = brats / "BraTS2021_Training_Data/BraTS2021_00000/BraTS2021_00000_seg.nii.gz"
    save_nii(seg, np.full((12, 12, 5), 3, np.int16), (1.0, 1.0, 1.0))  # BraTS 2023 numbering
    msg = _error("brats2021", brats, tmp_path / "c")
    assert str(seg) in msg and "{3}" in msg


def test_nan_and_inf_intensities(tmp_path):
    root = make_btcv(tmp_path / "r", cases=(1, 5))
    img = root / "RawData/Training/img/img0005.nii.gz"
    data = np.zeros((16, 16, 4), np.float32)
    data[1, 1, 1], data[2, 2, 2] = np.nan, np.inf
    save_nii(img, data, (0.8, 0.8, 3.0))
    msg = _error("btcv", root, tmp_path / "c")
    assert str(img) in msg and "2 NaN/inf" in msg


def test_empty_dataset_after_filtering(tmp_path):
    root = tmp_path / "r"
    for cls in ("normal",):
        save(root / f"Dataset_BUSI_with_GT/{cls}/{cls} (1).png", photo(blob()))
        save(root / f"Dataset_BUSI_with_GT/{cls}/{cls} (1)_mask.png", np.zeros((40, 48), np.uint8))
    assert "no image files" in _error("busi", root, tmp_path / "c", include_normal=False)
    only_text = tmp_path / "t" / "ISIC2018_Task1-2_Training_Input"
    only_text.mkdir(parents=True)
    (only_text / "LICENSE.txt").write_text("x")
    (tmp_path / "t" / "ISIC2018_Task1_Training_GroundTruth").mkdir()
    assert "no image files" in _error("isic2018", tmp_path / "t", tmp_path / "c")


def test_no_partial_cache_after_a_failure(tmp_path):
    root, cache = make_isic2016(tmp_path / "r"), tmp_path / "c"
    last = root / "ISBI2016_ISIC_Part1_Test_Data/ISIC_0009001.jpg"  # read last: the build fails late
    last.write_bytes(last.read_bytes()[:150])
    _error("isic2016", root, cache)
    leftovers = list((cache / "cases").iterdir()) if (cache / "cases").exists() else []
    assert leftovers == [], leftovers
    pair(last, root / "ISBI2016_ISIC_Part1_Test_GroundTruth/ISIC_0009001_Segmentation.png", 1)
    ds, cases = load("isic2016", root, cache)
    assert len(cases) == 7 and ds.cache_status().startswith("cached")
