"""ShEMO (Sharif Emotional Speech Database): file-name labels, the corpus listing, `hw5 prepare ser`.

The release is two zips, female.zip and male.zip, that unpack to `female/*.wav` and `male/*.wav`
(3,000 clips). A name such as `F01A01.wav` carries gender (F/M), speaker number, emotion letter and
an index. Optionally the Modified-ShEMO relabelling (modified_shemo.json, 163 corrected labels) replaces
the file-name labels.
"""
from __future__ import annotations

import csv
import http.client
import json
import os
import re
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable

from hw5.errors import DataError
from hw5.io import replace_dir, sha256_file, share_like_umask

EMOTIONS = ("anger", "fear", "happiness", "neutral", "sadness", "surprise")  # class index order
EMOTION_LETTERS = {"A": "anger", "F": "fear", "H": "happiness", "N": "neutral", "S": "sadness",
                   "W": "surprise"}
GENDERS = {"F": "female", "M": "male"}
EXPECTED_COUNTS = {"female": 1263, "male": 1737}   # clips per folder in the official release
# The release's 3,000 names with speaker, gender and file-name emotion (metadata only, no audio).
PACKAGE_FILES_CSV = Path(__file__).with_name("shemo_files.csv")
MODIFIED_LABELS_NAME = "modified_shemo.json"      # Modified ShEMO (github.com/aliyzd95/modified_shemo)
# Where the authors' README (github.com/pariajm/sharif-emotional-speech-dataset) pointed for the zips.
# Unverified from here (no internet on the build machines); Dropbox needs dl=1 for the raw file.
# A base URL from HW5_SHEMO_URL or --url replaces both: <base>/female.zip, <base>/male.zip.
DEFAULT_ZIP_URLS = {
    "female.zip": "https://www.dropbox.com/s/4t6mep8mo4yf81f/female.zip?dl=1",
    "male.zip": "https://www.dropbox.com/s/xfi3hi927yxixa9/male.zip?dl=1",
}
# sha256 of the official zips. Empty: no copy of the release exists where this was written; once
# someone has the real zips, `sha256sum female.zip male.zip` fills it and prepare_shemo checks it.
SHEMO_SHA256: dict[str, str] = {}
_NAME_RE = re.compile(r"([FM])(\d{2})([AFHNSW])(\d{2})\.wav")
_MAX_LISTED = 20   # problem lines shown in one error before "... and N more"


@dataclass(frozen=True)
class ShemoFile:
    """What a ShEMO file name says."""
    name: str       # e.g. "F01A01.wav"
    gender: str     # "female" | "male"
    speaker: str    # e.g. "F01"
    emotion: str    # label from the file name, one of EMOTIONS
    index: int      # utterance number of this speaker in this emotion


@dataclass(frozen=True)
class ShemoClip(ShemoFile):
    """A file of the corpus on disk with the label chosen by `label_source`."""
    path: str = ""
    label: str = ""   # emotion used for training: file-name or Modified-ShEMO label

    @property
    def label_index(self) -> int:
        return EMOTIONS.index(self.label)


def parse_shemo_name(name: str) -> ShemoFile:
    """Parse `<F|M><2-digit speaker><emotion letter><2-digit index>.wav`."""
    match = _NAME_RE.fullmatch(name)
    if not match:
        raise DataError(f"{name}: not a ShEMO file name; expected <F|M><speaker 2 digits>"
                        f"<emotion letter A|F|H|N|S|W><index 2 digits>.wav, e.g. F01A01.wav")
    sex, number, letter, index = match.groups()
    return ShemoFile(name=name, gender=GENDERS[sex], speaker=sex + number,
                     emotion=EMOTION_LETTERS[letter], index=int(index))


def read_files_table(path: str | os.PathLike = PACKAGE_FILES_CSV) -> list[dict[str, str]]:
    """Rows of shemo_files.csv (wav, speaker, gender, emotion_filename, ...)."""
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def release_names() -> list[str]:
    """The 3,000 WAV names of the official release."""
    return [row["wav"] for row in read_files_table()]


def _format_problems(problems: list[str]) -> str:
    shown = problems[:_MAX_LISTED]
    more = len(problems) - len(shown)
    return "\n  ".join(shown + ([f"... and {more} more"] if more else []))


def load_modified_labels(path: str | os.PathLike) -> dict[str, str]:
    """{wav name: emotion} from modified_shemo.json (keyed by WAV name, field "emotion")."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: Modified-ShEMO labels not found; copy {MODIFIED_LABELS_NAME} "
                        f"(github.com/aliyzd95/modified_shemo) there, or use label_source: filename")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
        labels = {name: entry["emotion"] for name, entry in entries.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: not a Modified-ShEMO label file (a JSON object of "
                        f"{{'F01A01.wav': {{'emotion': ...}}}}): {exc!r}") from None
    bad = sorted(f"{name}: '{emotion}'" for name, emotion in labels.items() if emotion not in EMOTIONS)
    if bad:
        raise DataError(f"{path}: {len(bad)} unknown emotion(s) (expected one of {EMOTIONS}):\n  "
                        + _format_problems(bad))
    return labels


# Files that unzip tools and file browsers add: skipped with a note, never errors.
TOOL_LITTER = {".DS_Store", "Thumbs.db", "desktop.ini", "__MACOSX"}


def _scan_folder(shemo_dir: Path, gender: str, problems: list[str], litter: list[str]) -> list[ShemoFile]:
    """Parse every entry of `<shemo_dir>/<gender>/`; anything odd becomes a problem line."""
    folder = shemo_dir / gender
    if not folder.is_dir():
        problems.append(f"{folder}: folder missing (the release unpacks to female/ and male/)")
        return []
    files = []
    for entry in sorted(folder.iterdir()):
        where = f"{gender}/{entry.name}"
        if entry.name in TOOL_LITTER or entry.name.startswith("._"):
            litter.append(where)
            continue
        if not entry.is_file() or entry.suffix != ".wav":
            problems.append(f"{where}: not a .wav file (remove it)")
            continue
        try:
            parsed = parse_shemo_name(entry.name)
        except DataError:
            problems.append(f"{where}: not a ShEMO name like F01A01.wav (rename or remove it)")
            continue
        if parsed.gender != gender:
            problems.append(f"{where}: a {parsed.gender} speaker's file in {gender}/ "
                            f"(move it to {parsed.gender}/)")
            continue
        files.append(parsed)
    return files


def _content_problems(shemo_dir: Path, files: list[ShemoFile]) -> list[str]:
    """Empty, non-audio and truncated WAVs, from their headers: listed with the naming problems, so
    one pass names everything that is wrong with the tree."""
    from hw5.data.audio import header_problem
    found = (header_problem(shemo_dir / f.gender / f.name) for f in files)
    return [p.replace(f"{shemo_dir}/", "") for p in found if p]


def list_corpus(shemo_dir: str | os.PathLike, label_source: str = "filename",
                modified_path: str | os.PathLike | None = None,
                expect_full: bool = False) -> list[ShemoClip]:
    """Every clip under `<shemo_dir>/{female,male}/` with its label, sorted by name.

    label_source: "filename" (official labels) or "modified" (Modified ShEMO; modified_path defaults
    to `<shemo_dir>/modified_shemo.json`). expect_full: also require all 3,000 release names.
    """
    if label_source not in ("filename", "modified"):
        raise DataError(f"label_source '{label_source}': use 'filename' or 'modified'")
    shemo_dir = Path(shemo_dir)
    if not shemo_dir.is_dir():
        raise DataError(f"{shemo_dir}: ShEMO folder not found; run `hw5 prepare ser` "
                        f"(or unpack female.zip and male.zip there)")
    problems: list[str] = []
    litter: list[str] = []
    files = [f for gender in ("female", "male") for f in _scan_folder(shemo_dir, gender, problems, litter)]
    if litter:
        print(f"note: {shemo_dir}: skipped {len(litter)} file(s) that unzip tools add ({', '.join(litter[:3])}"
              f"{', ...' if len(litter) > 3 else ''})", file=sys.stderr, flush=True)
    if problems:   # the files' contents too, so that one pass names every problem
        problems += _content_problems(shemo_dir, files)
        raise DataError(f"{shemo_dir}: {len(problems)} problem(s) in the ShEMO tree:\n  "
                        + _format_problems(problems))
    if expect_full:
        _check_complete(shemo_dir, {f.name for f in files}, release_names())
    labels = {f.name: f.emotion for f in files}
    if label_source == "modified":
        labels = _modified_labels_for(files, Path(modified_path or shemo_dir / MODIFIED_LABELS_NAME))
    return sorted((ShemoClip(**vars(f), path=str(shemo_dir / f.gender / f.name), label=labels[f.name])
                   for f in files), key=lambda clip: clip.name)


def _modified_labels_for(files: list[ShemoFile], path: Path) -> dict[str, str]:
    modified = load_modified_labels(path)
    missing = sorted(f.name for f in files if f.name not in modified)
    if missing:
        raise DataError(f"{path}: no Modified-ShEMO label for {len(missing)} clip(s) on disk:\n  "
                        + _format_problems(missing) + "\nUse the full modified_shemo.json or "
                        "label_source: filename")
    return modified


def _check_complete(where: Path | str, present: set[str], expected: Iterable[str]) -> None:
    expected = set(expected)
    missing, extra = sorted(expected - present), sorted(present - expected)
    lines = [f"not in the release: {name}" for name in extra] + [f"missing: {name}" for name in missing]
    if lines:
        raise DataError(f"{where}: {len(missing)} of {len(expected)} expected file(s) missing, "
                        f"{len(extra)} unexpected:\n  " + _format_problems(lines)
                        + "\nRe-download or re-extract the release zips (hw5 prepare ser)")


# ---------------------------------------------------------------- hw5 prepare ser
def zip_urls(url: str | None = None) -> dict[str, str]:
    """Download location of each zip: `url` or $HW5_SHEMO_URL as a base, else DEFAULT_ZIP_URLS."""
    base = url or os.environ.get("HW5_SHEMO_URL")
    if not base:
        return dict(DEFAULT_ZIP_URLS)
    return {name: f"{base.rstrip('/')}/{name}" for name in DEFAULT_ZIP_URLS}


def download(url: str, dest: Path, timeout: float = 60.0) -> Path:
    """Stream `url` to `dest` through a temp file; one-line DataError when it fails."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.partial")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
            expected = int(response.headers.get("Content-Length") or 0)
            _copy_with_progress(response, out, expected, dest.name)
            got = out.tell()
        if expected and got != expected:
            raise DataError(f"could not download {url}: got {got} of {expected} bytes; try again")
        os.replace(tmp, dest)
    except DataError:
        raise
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as exc:
        raise DataError(f"could not download {url} ({getattr(exc, 'reason', exc)}); offline? Fetch "
                        f"female.zip and male.zip by hand and run `hw5 prepare ser --zips DIR`") from None
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _copy_with_progress(src, dst, total: int, label: str) -> None:
    """Copy in 1 MiB blocks with a progress line on stderr every 64 MiB (downloads are ~0.4 GB)."""
    done, next_report = 0, 64 << 20
    for block in iter(lambda: src.read(1 << 20), b""):
        dst.write(block)
        done += len(block)
        if done >= next_report:
            of = f" of {total >> 20}" if total else ""
            print(f"  {label}: {done >> 20}{of} MiB", file=sys.stderr, flush=True)
            next_report += 64 << 20


def _member_target(member: zipfile.ZipInfo, zip_name: str, gender: str) -> str | None:
    """The WAV name a zip member unpacks to; None for folders and OS metadata."""
    path = PurePosixPath(member.filename.replace("\\", "/"))
    if member.is_dir() or "__MACOSX" in path.parts or path.name.startswith("."):
        return None
    if path.is_absolute() or ".." in path.parts:
        raise DataError(f"{zip_name}: unsafe member path '{member.filename}' (absolute or '..'); "
                        f"refusing to unpack this zip")
    parsed = parse_shemo_name(path.name) if _NAME_RE.fullmatch(path.name) else None
    if parsed is None or parsed.gender != gender:
        raise DataError(f"{zip_name}: member '{member.filename}' is not a {gender} ShEMO WAV "
                        f"(e.g. {gender[0].upper()}01A01.wav); is this the official {zip_name}?")
    return path.name


# The longest ShEMO clip is ~33 s of 44.1 kHz 16-bit mono (< 3 MB): a member declaring or unpacking to
# more is not the release (a zip bomb would fill the disk before anything could be checked).
MAX_MEMBER_BYTES = 32 * 2**20


def _members(zip_path: Path, gender: str) -> list[tuple[zipfile.ZipInfo, str]]:
    """(member, WAV name) for every clip of a release zip, checked before anything is written."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, OSError) as exc:
        raise DataError(f"{zip_path}: corrupt or truncated zip ({exc}); delete it and download it again") from None
    members, names = [], set()
    for member in infos:
        target = _member_target(member, zip_path.name, gender)
        if target is None:
            continue
        if target in names:
            raise DataError(f"{zip_path}: '{target}' appears twice in the zip")
        if member.file_size > MAX_MEMBER_BYTES:
            raise DataError(f"{zip_path}: '{member.filename}' unpacks to {member.file_size / 2**20:.0f} MB, more "
                            f"than any ShEMO clip ({MAX_MEMBER_BYTES // 2**20} MB at most); not the release zip")
        members.append((member, target))
        names.add(target)
    return members


def _unpack(zip_path: Path, members: list[tuple[zipfile.ZipInfo, str]], into: Path) -> set[str]:
    """Unpack the checked members flat into `into/` (only ShEMO WAV names are written: no traversal)."""
    into.mkdir(parents=True)
    try:
        with zipfile.ZipFile(zip_path) as archive:
            for member, target in members:
                with archive.open(member) as src, open(into / target, "wb") as dst:
                    _copy_capped(src, dst, zip_path, member.filename)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error) as exc:
        raise DataError(f"{zip_path}: corrupt or truncated zip ({exc}); delete it and download it "
                        f"again") from None
    except OSError as exc:   # reading the zip or writing the tree (e.g. disk full)
        raise DataError(f"{zip_path}: could not unpack into {into} ({exc})") from None
    return {target for _, target in members}


def _copy_capped(src, dst, zip_path: Path, member: str) -> None:
    written = 0
    while block := src.read(1 << 20):
        written += len(block)
        if written > MAX_MEMBER_BYTES:   # more than its header declared: refuse before the disk fills
            raise DataError(f"{zip_path}: '{member}' unpacks to more than {MAX_MEMBER_BYTES // 2**20} MB; "
                            f"not the release zip")
        dst.write(block)


def _check_free_space(folder: Path, members: dict[str, list[tuple[zipfile.ZipInfo, str]]]) -> None:
    need = sum(m.file_size for group in members.values() for m, _ in group)
    free = shutil.disk_usage(folder).free
    if free < need * 1.1 + 64 * 2**20:    # the unpacked tree, a margin, and nothing half-written
        raise DataError(f"{folder}: {free / 2**30:.2f} GB free, unpacking ShEMO needs {need / 2**30:.2f} GB; "
                        f"free some space or pass another --data-dir")


def _verify_tree(staging: Path, label: str) -> None:
    """Every unpacked WAV is readable audio: a zip with the right names but other content never
    replaces a good tree."""
    from hw5.data.audio import header_problem
    problems = [p for gender in GENDERS.values() for path in sorted((staging / gender).iterdir())
                if (p := header_problem(path))]
    if problems:
        shown = [p.replace(f"{staging}/", "") for p in problems]
        raise DataError(f"{label}: {len(problems)} unpacked file(s) are not usable audio; the existing tree is "
                        f"kept:\n  " + _format_problems(shown) + "\nDownload the release zips again")


def _fetch_zips(data_dir: Path, zips_from: str | os.PathLike | None, url: str | None) -> dict[str, Path]:
    if zips_from is not None:
        zips = {name: Path(zips_from) / name for name in DEFAULT_ZIP_URLS}
        missing = [str(path) for path in zips.values() if not path.is_file()]
        if missing:
            raise DataError(f"release zip(s) not found: {', '.join(missing)}; put female.zip and "
                            f"male.zip in {zips_from}")
        return zips
    zips = {}
    for name, source in zip_urls(url).items():
        dest = data_dir / "downloads" / name
        if not dest.is_file():   # downloads land via a temp file, so an existing one is complete
            print(f"downloading {source} -> {dest}", file=sys.stderr, flush=True)
            download(source, dest)
        zips[name] = dest
    return zips


def prepare_shemo(data_dir: str | os.PathLike, zips_from: str | os.PathLike | None = None,
                  url: str | None = None, expected: Iterable[str] | None = None,
                  checksums: dict[str, str] | None = None) -> dict[str, int]:
    """`hw5 prepare ser`: unpack female.zip / male.zip into `<data_dir>/shemo/{female,male}/`.

    zips_from: folder holding both zips; otherwise they are downloaded (see zip_urls) into
    `<data_dir>/downloads/`. expected: WAV names that must be present (default: the 3,000 of the
    release). checksums: {zip name: sha256} (default SHEMO_SHA256). Returns clips per gender.
    """
    shemo_dir = Path(data_dir) / "shemo"
    expected = set(release_names() if expected is None else expected)
    if _tree_names(shemo_dir) == expected:
        print(f"{shemo_dir}: already prepared ({len(expected)} clips)", file=sys.stderr)
        return _counts(shemo_dir)
    zips = _fetch_zips(Path(data_dir), zips_from, url)
    _verify_checksums(zips, SHEMO_SHA256 if checksums is None else checksums)
    shemo_dir.mkdir(parents=True, exist_ok=True)
    for stale in shemo_dir.glob(".unpack-*"):    # left by an interrupted earlier run
        shutil.rmtree(stale, ignore_errors=True)
    members = {gender: _members(zips[f"{gender}.zip"], gender) for gender in GENDERS.values()}
    _check_free_space(shemo_dir, members)
    staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=shemo_dir))
    label = " + ".join(str(p) for p in zips.values())
    try:
        present = set()
        for gender in GENDERS.values():
            present |= _unpack(zips[f"{gender}.zip"], members[gender], staging / gender)
        _check_complete(label, present, expected)
        _verify_tree(staging, label)
        for gender in GENDERS.values():   # both verified: each folder appears whole or not at all
            share_like_umask(staging / gender, recursive=True)
            replace_dir(staging / gender, shemo_dir / gender)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    counts = _counts(shemo_dir)
    print(f"{shemo_dir}: {counts['female']} female + {counts['male']} male clips", file=sys.stderr)
    return counts


def _tree_names(shemo_dir: Path) -> set[str] | None:
    """Entry names under female/ and male/; None unless both folders exist."""
    folders = [shemo_dir / gender for gender in GENDERS.values()]
    if not all(folder.is_dir() for folder in folders):
        return None
    return {entry.name for folder in folders for entry in folder.iterdir()}


def _counts(shemo_dir: Path) -> dict[str, int]:
    return {gender: sum(1 for _ in (shemo_dir / gender).iterdir()) for gender in GENDERS.values()}


def _verify_checksums(zips: dict[str, Path], checksums: dict[str, str]) -> None:
    for name, path in zips.items():
        want = checksums.get(name)
        if want and sha256_file(path) != want.lower():
            raise DataError(f"{path}: sha256 does not match the release ({want[:12]}…); delete it "
                            f"and download it again")
