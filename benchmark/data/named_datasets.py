"""The field's test sets by name: where each comes from, how to check it, where it lives once fetched.

Each named dataset lists its official sources (address, file, size, sha256) and how it opens once
unpacked (a folder of images, MS-COCO's layout, CUB in AttnGAN's layout). Checksums come from where they
are published or established (each source says where); a source without one has its sha256 recorded at
the first fetch (`pins.json`) and checked on every later use. Datasets live under the data root:
`--data-root`, else $CMCBENCH_DATA, else $XDG_CACHE_HOME/cmcbench/datasets (~/.cache/cmcbench/datasets):

    ROOT/NAME/               the images, as `--dataset NAME` opens them
    ROOT/.downloads/NAME/    the downloaded files, pins.json, fetched.json

$CMCBENCH_DATASET_MIRROR (an address) replaces every source's host and path with MIRROR/NAME/FILE: a local
mirror of the files, and how the tests serve fakes.
"""

from __future__ import annotations

import http.client
import json
import os
import pathlib
import shlex
import shutil
import tarfile
import zipfile
from dataclasses import dataclass, replace

from benchmark import command
from metrics.download import ChecksumMismatch, download_url_to_file, file_digest, partial_path
from metrics.suggest import did_you_mean

ENV_ROOT = "CMCBENCH_DATA"
ENV_MIRROR = "CMCBENCH_DATASET_MIRROR"
TFDS = "tensorflow-datasets url_checksums"


@dataclass(frozen=True)
class Source:
    url: str
    file: str
    size: int | None = None
    sha256: str | None = None  # None: recorded at the first fetch (pins.json), checked on every later use
    checksum_from: str = ""
    unpack: bool = True  # an archive (zip, tar) to unpack; else a file copied as it is
    strip: str = ""  # a leading folder of the archive's members to drop when unpacking


@dataclass(frozen=True)
class NamedDataset:
    name: str
    description: str
    images: int
    opens_as: str  # "folder", "coco:<split>" or "cub"
    sources: tuple[Source, ...]
    papers: str = ""

    def dataset_spec(self, root: pathlib.Path) -> tuple[str, str | None]:
        """(open_dataset spec, split) of the unpacked data."""
        kind, _, split = self.opens_as.partition(":")
        return f"{kind}:{root / self.name}", split or None


def _kodak() -> tuple[Source, ...]:
    return tuple(Source(f"http://r0k.us/graphics/kodak/kodak/kodim{i:02d}.png", f"kodim{i:02d}.png", unpack=False,
                        checksum_from="none published: pinned at the first fetch") for i in range(1, 25))


CLIC = "https://data.vision.ee.ethz.ch/cvl/clic/"
COCO = "http://images.cocodataset.org/"
CATALOG: dict[str, NamedDataset] = {d.name: d for d in [
    NamedDataset("kodak", "Kodak PhotoCD, 24 images of 768x512 (r0k.us)", 24, "folder", _kodak(),
                 "CompressAI, Balle et al., HiFiC (no FID), every learned codec"),
    NamedDataset("clic2020-professional-valid", "CLIC 2020 professional, validation", 41, "folder",
                 (Source(CLIC + "professional_valid_2020.zip", "professional_valid_2020.zip", 134834429,
                         "00be38092ade2ab5163b65f7f6523d46c7bca147007f559adbb02c0afc236b7d", TFDS + "/clic.txt"),),
                 "MS-ILLM, HiFiC"),
    NamedDataset("clic2020-professional-test", "CLIC 2020 professional, test (the 428-image 'CLIC2020 test' is "
                 "professional + mobile test)", 250, "folder",
                 (Source(CLIC + "test/CLIC2020Professional_test.zip", "CLIC2020Professional_test.zip", 891643809,
                         "857df244fc2bfa5da28d4c66bf0db16ee99bfc79eb807be8afa89cd507852884", TFDS + "/clic.txt"),),
                 "HiFiC, MS-ILLM, PerCo"),
    NamedDataset("clic2020-mobile-valid", "CLIC 2020 mobile, validation", 61, "folder",
                 (Source(CLIC + "mobile_valid_2020.zip", "mobile_valid_2020.zip", 236556531,
                         "ff0280382eeb32fdceb28c81a7f47ac9ad86d933ebe901680845635d04e47a10", TFDS + "/clic.txt"),)),
    NamedDataset("clic2020-mobile-test", "CLIC 2020 mobile, test", 178, "folder",
                 (Source(CLIC + "test/CLIC2020Mobile_test.zip", "CLIC2020Mobile_test.zip", 721789976,
                         "2025f07a6c652270e534640de4271feef3b3dd3260beed4ac4821064837aa732", TFDS + "/clic.txt"),)),
    NamedDataset("div2k-valid", "DIV2K validation, 100 high-resolution images", 100, "folder",
                 (Source("https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_valid_HR.zip", "DIV2K_valid_HR.zip",
                         448993893, "20dd31fd84d777bc1cf5d6b7654a3f569c0aec74458ae094122ad1d0489900fc",
                         TFDS + "/div2k.txt"),), "DiffEIC, MS-ILLM"),
    NamedDataset("tecnick", "Tecnick TESTIMAGES, RGB 1200x1200 sampling set (100 images, 8 bit), as CompressAI "
                 "reports it", 100, "folder",
                 (Source("https://sourceforge.net/projects/testimages/files/OLD/OLD_SAMPLING/testimages.zip/download",
                         "testimages.zip", checksum_from="none published: pinned at the first fetch"),),
                 "CompressAI, Balle et al."),
    NamedDataset("coco2014-val", "MS-COCO 2014 validation with captions (text-to-image 'COCO 30k' is drawn from "
                 "it)", 40504, "coco:val2014",
                 (Source(COCO + "zips/val2014.zip", "val2014.zip", 6645013297,
                         "fe9be816052049c34717e077d9e34aa60814a55679f804cd043e3cbee3b9fde0", TFDS + "/coco2014.txt"),
                  Source(COCO + "annotations/annotations_trainval2014.zip", "annotations_trainval2014.zip", 252872794,
                         "031296bbc80c45a1d1f76bf9a90ead27e94e99ec629208449507a4917a3bf009", TFDS + "/coco2014.txt")),
                 "CMC (ACM MM 2021), text-to-image FID-30k"),
    NamedDataset("coco2017-val", "MS-COCO 2017 validation with captions", 5000, "coco:val2017",
                 (Source(COCO + "zips/val2017.zip", "val2017.zip", 815585330,
                         "4f7e2ccb2866ec5041993c9cf2a952bbed69647b115d0f74da7ce8f4bef82f05", TFDS + "/coco2017.txt"),
                  Source(COCO + "annotations/annotations_trainval2017.zip", "annotations_trainval2017.zip", 252907541,
                         "113a836d90195ee1f884e704da6304dfaaecff1f023f49b6ca93c4aaae470268", TFDS + "/coco2017.txt")),
                 "PerCo (with its own image list), text-to-image work"),
    NamedDataset("coco2017-train", "MS-COCO 2017 train with captions (for image lists such as PerCo's)", 118287,
                 "coco:train2017",
                 (Source(COCO + "zips/train2017.zip", "train2017.zip", 19336861798,
                         "69a8bb58ea5f8f99d24875f21416de2e9ded3178e903f1f7603e283b9e06d929", TFDS + "/coco2017.txt"),
                  Source(COCO + "annotations/annotations_trainval2017.zip", "annotations_trainval2017.zip", 252907541,
                         "113a836d90195ee1f884e704da6304dfaaecff1f023f49b6ca93c4aaae470268", TFDS + "/coco2017.txt")),
                 "PerCo"),
    NamedDataset("cub-200-2011", "CUB-200-2011 birds with the Reed et al. captions and AttnGAN's class-disjoint "
                 "split (2,933 test images)", 2933, "cub:test",
                 (Source("https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz", "CUB_200_2011.tgz",
                         1150585339, "0c685df5597a8b24909f6a7c9db6d11e008733779a671760afef78feb49bf081",
                         TFDS + "/caltech_birds2011.txt (the same archive, mirrored)"),
                  Source("https://drive.google.com/uc?export=download&id=1O_LtUP9sch09QH3s_EBAgLEctBQ5JBSJ",
                         "birds.zip", checksum_from="none published (AttnGAN's captions and split): pinned at the "
                         "first fetch", strip="birds/")),
                 "CMC (ACM MM 2021), AttnGAN, text-to-image work"),
]}


class DatasetMissing(ValueError):
    """A named dataset is not on this machine (or does not verify); the message says what to do. `by_hand`: the
    folder of that name filled by hand, and `unless` what to do about it up to using it as it is, which each
    command that takes a dataset offers in its own words (run's --dataset PATH)."""

    def __init__(self, message: str, by_hand: pathlib.Path | None = None, unless: str = ""):
        super().__init__(message)
        self.by_hand, self.unless = by_hand, unless


def data_root(path: str | None = None) -> pathlib.Path:
    if path:
        return pathlib.Path(os.path.expanduser(path))
    if os.environ.get(ENV_ROOT):
        return pathlib.Path(os.path.expanduser(os.environ[ENV_ROOT]))
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return pathlib.Path(os.path.expanduser(cache)) / "cmcbench" / "datasets"


def get(name: str) -> NamedDataset:
    if name not in CATALOG:
        close = did_you_mean(name, CATALOG)
        raise ValueError(f"Unknown named dataset {name!r}; {close}named datasets: {', '.join(CATALOG)}.")
    entry = CATALOG[name]
    mirror = os.environ.get(ENV_MIRROR)
    if mirror:
        entry = replace(entry, sources=tuple(replace(s, url=f"{mirror.rstrip('/')}/{name}/{s.file}")
                                             for s in entry.sources))
    return entry


def downloads_dir(root: pathlib.Path, name: str) -> pathlib.Path:
    return root / ".downloads" / name


def _pins(root: pathlib.Path, name: str) -> dict:
    path = downloads_dir(root, name) / "pins.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _write_json(path: pathlib.Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def is_fetched(root: pathlib.Path, name: str) -> bool:
    return (downloads_dir(root, name) / "fetched.json").exists() and (root / name).is_dir()


def size_on_disk(path: pathlib.Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def verify(entry: NamedDataset, source: Source, path: pathlib.Path, pins: dict) -> str:
    """The file's sha256 if it is the declared (or pinned) one; else it is deleted and DatasetMissing says so."""
    if source.size is not None and path.stat().st_size != source.size:
        got = path.stat().st_size
        path.unlink()
        raise DatasetMissing(f"{path} has {got} bytes, not the {source.size} of {entry.name}'s {source.file}: it was "
                             "deleted; fetch it again.")
    digest = file_digest(path)
    expected = source.sha256 or pins.get(source.file)
    if expected and digest != expected:
        path.unlink()
        raise DatasetMissing(f"{path} has sha256 {digest[:16]}..., not {entry.name}'s {expected[:16]}... "
                             f"({source.checksum_from or 'pinned at its first fetch'}): it was deleted; fetch it again.")
    return digest


def _unpack(source: Source, archive: pathlib.Path, target: pathlib.Path) -> None:
    """Unpack into `target`, refusing members that would land outside it."""
    target.mkdir(parents=True, exist_ok=True)
    if not source.unpack:
        shutil.copyfile(archive, target / source.file)
        return
    base = target.resolve()

    def destination(member: str) -> pathlib.Path | None:
        rel = member[len(source.strip):] if source.strip and member.startswith(source.strip) else member
        if not rel or rel.endswith("/"):
            return None
        out = (base / rel).resolve()
        if base not in out.parents:
            raise DatasetMissing(f"{archive} holds {member!r}, which would land outside {target}: refused.")
        return out

    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                out = destination(info.filename)
                if out is not None:
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with z.open(info) as src, open(out, "wb") as dst:
                        shutil.copyfileobj(src, dst)
        return
    with tarfile.open(archive) as t:
        for member in t.getmembers():
            out = destination(member.name) if member.isfile() else None
            if out is not None:
                out.parent.mkdir(parents=True, exist_ok=True)
                with t.extractfile(member) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)


def fetch(name: str, root: pathlib.Path, progress: bool = True, offline: bool = False) -> pathlib.Path:
    """Download (resuming partial files), verify, pin and unpack a named dataset; return its folder. Files
    already in ROOT/.downloads/NAME/ (placed by hand) are verified and used without the network."""
    entry = get(name)
    store = downloads_dir(root, name)
    store.mkdir(parents=True, exist_ok=True)
    pins = _pins(root, name)
    digests = {}
    for source in entry.sources:
        path = store / source.file
        if not path.exists():
            if offline:
                raise missing_message(entry, root)
            try:
                download_url_to_file(source.url, path, sha256=source.sha256, progress=progress, resume=True)
            except ChecksumMismatch as exc:
                raise DatasetMissing(f"{name}: {exc}; fetch it again (a mirror may serve another file).") from None
            except (OSError, http.client.HTTPException) as exc:  # unreachable, refused, cut midway
                kept = partial_path(path)
                raise DatasetMissing(
                    f"{name}: downloading {source.url} failed ({exc}); "
                    + (f"{kept.stat().st_size} bytes are kept and the next fetch resumes from there, or "
                       if kept.exists() else "")
                    + f"put {_files_phrase([s.file for s in entry.sources if not (store / s.file).exists()])} "
                      f"in {store} by hand.") from None
        digests[source.file] = verify(entry, source, path, pins)
        if source.sha256 is None and source.file not in pins:
            pins[source.file] = digests[source.file]
            _write_json(store / "pins.json", pins)
    target = root / name
    if target.exists():
        shutil.rmtree(target)
    for source in entry.sources:
        _unpack(source, store / source.file, target)
    write_manifest(target, store)
    _write_json(store / "fetched.json", {"name": name, "sha256": digests})
    return target


MANIFEST = "unpacked.json"  # beside the downloads: every unpacked file's size and sha256, and the stat it had


def _unpacked_files(target: pathlib.Path) -> dict[str, pathlib.Path]:
    return {p.relative_to(target).as_posix(): p for p in sorted(target.rglob("*")) if p.is_file()}


def write_manifest(target: pathlib.Path, store: pathlib.Path) -> None:
    files = {}
    for rel, path in _unpacked_files(target).items():
        stat = path.stat()
        files[rel] = {"size": stat.st_size, "sha256": file_digest(path), "mtime_ns": stat.st_mtime_ns}
    _write_json(store / MANIFEST, {"files": files})


def check_unpacked(entry: NamedDataset, root: pathlib.Path, allow_modified: bool = False) -> list[str]:
    """Every use: the unpacked files are the ones the fetch wrote. A file whose size and modification time are as
    recorded is taken as unchanged (fast); any other is hashed. A changed, missing or extra file is refused in
    one sentence naming it; with `allow_modified` the run goes on and the differences are returned, to record.
    A dataset fetched before manifests existed gets one now, from its files as they are."""
    target, store = root / entry.name, downloads_dir(root, entry.name)
    if not (store / MANIFEST).exists():
        try:
            write_manifest(target, store)
        except OSError:  # a read-only data root: checked by the downloads' checksums alone, as before
            pass
        return []
    recorded = json.loads((store / MANIFEST).read_text())["files"]
    present = _unpacked_files(target)
    problems = [f"{rel} is missing" for rel in recorded if rel not in present]
    problems += [f"{rel} was added" for rel in present if rel not in recorded]
    refreshed = False
    for rel, path in present.items():
        want = recorded.get(rel)
        if want is None:
            continue
        stat = path.stat()
        if (stat.st_size, stat.st_mtime_ns) == (want["size"], want["mtime_ns"]):
            continue
        if stat.st_size == want["size"] and file_digest(path) == want["sha256"]:
            want["mtime_ns"], refreshed = stat.st_mtime_ns, True  # touched, not changed: fast again next time
        else:
            problems.append(f"{rel} changed (sha256 differs from the one recorded when it was unpacked)")
    if refreshed:
        try:
            _write_json(store / MANIFEST, {"files": recorded})
        except OSError:  # read-only: hashed again next time
            pass
    if problems and not allow_modified:
        more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
        raise DatasetMissing(f"Dataset {entry.name} in {target} is not as it was unpacked: {'; '.join(problems[:3])}"
                             f"{more}. Fetch it again ({command()} datasets fetch {entry.name}), or pass "
                             "--allow-modified-dataset to run on it as it is (recorded with the run).")
    return problems


def _files_phrase(files: list[str]) -> str:
    """Every file a user must place by hand, counted: 'a', 'a and b', 'the 24 files kodim01.png ... kodim24.png'
    (a numbered run) or all of them named."""
    if len(files) <= 2:
        return " and ".join(files)
    numbered = all(f[:-6] == files[0][:-6] and f[-6:-4].isdigit() for f in files) and \
        [int(f[-6:-4]) for f in files] == list(range(int(files[0][-6:-4]), int(files[0][-6:-4]) + len(files)))
    return f"the {len(files)} files " + (f"{files[0]} ... {files[-1]}" if numbered else ", ".join(files))


def missing_message(entry: NamedDataset, root: pathlib.Path) -> DatasetMissing:
    """What to do about a dataset that was never fetched into `root`; a folder of that name that holds files cmcbench
    did not fetch (Kodak copied there by hand) is named as such, not said to be absent."""
    shown, store, here = _files_phrase([s.file for s in entry.sources]), downloads_dir(root, entry.name), \
        root / entry.name
    fetch = (f"`{command()} datasets fetch {entry.name}"
             f"{' --data-root ' + shlex.quote(str(root)) if root != data_root() else ''}`")
    held = sum(1 for p in here.rglob("*") if p.is_file()) if here.is_dir() else 0
    if held:
        placed = all((here / s.file).is_file() for s in entry.sources)
        unless = (f"{here} holds {held} file{'' if held == 1 else 's'}, but not as cmcbench fetched {entry.name} "
                  f"(nothing about them is recorded in {store}), so they cannot be checked as that dataset: "
                  + (f"move {shown} into {store} and run again (checked and pinned then)" if placed
                     else f"run {fetch}"))
        return DatasetMissing(f"{unless}, or run on the folder as it is with --dataset {here}.", here, unless)
    return DatasetMissing(
        f"Dataset {entry.name} is not in {here}: run {fetch}, or, offline, put {shown} (from "
        f"{entry.sources[0].url.rsplit('/', 1)[0]}/) in {store} and run again.")


def check_pinned(entry: NamedDataset, root: pathlib.Path) -> None:
    """Every later use: the downloaded files of a fetched dataset are still the recorded ones. Files with a
    published checksum were checked at the fetch; pinned ones (small: Kodak, captions) are re-hashed here."""
    store = downloads_dir(root, entry.name)
    recorded = json.loads((store / "fetched.json").read_text())["sha256"]
    pins = _pins(root, entry.name)
    for source in entry.sources:
        path = store / source.file
        if not path.exists():
            continue  # the archive may be deleted once unpacked; its images stay
        if source.size is not None and path.stat().st_size != source.size:
            raise DatasetMissing(f"{path} changed size since it was fetched: fetch {entry.name} again.")
        if source.sha256 is None and file_digest(path) != pins.get(source.file, recorded.get(source.file)):
            raise DatasetMissing(f"{path} changed since its first fetch (its sha256 was pinned then): fetch "
                                 f"{entry.name} again.")


def resolve(name: str, root: pathlib.Path | None = None,
            allow_modified: bool = False) -> tuple[str, str | None, dict]:
    """(open_dataset spec, split, provenance) of a named dataset on this machine: fetched and verified, or
    placed by hand and verified now (no network); else DatasetMissing with what to do. Its unpacked files are
    checked against their manifest (`allow_modified`: run anyway, the differences in the provenance)."""
    entry = get(name)
    root = data_root(None) if root is None else root
    if not is_fetched(root, name):
        store = downloads_dir(root, name)
        if all((store / s.file).exists() for s in entry.sources):
            fetch(name, root, progress=False, offline=True)
        else:
            raise missing_message(entry, root)
    check_pinned(entry, root)
    modified = check_unpacked(entry, root, allow_modified)
    spec, split = entry.dataset_spec(root)
    recorded = json.loads((downloads_dir(root, name) / "fetched.json").read_text())["sha256"]
    origin = {"named": name, "data_root": str(root.resolve()),
              "sources": [{"url": CATALOG[name].sources[k].url, "file": s.file, "sha256": recorded.get(s.file),
                           "checksum_from": s.checksum_from} for k, s in enumerate(entry.sources)]}
    if modified:
        origin["modified"] = modified  # run on with --allow-modified-dataset: what differed from the unpacked files
    return spec, split, origin
