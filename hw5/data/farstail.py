"""FarsTail: locate or download the three CSVs, parse them strictly, normalize Persian text.

Files: `<data_dir>/farstail/{Train,Val,Test}-word.csv`, tab-separated with csv quoting (some quoted
fields hold tabs), columns premise, hypothesis, label (e/c/n); Test adds hard(hypothesis) and
hard(overlap) 0/1 flags. Malformed rows are errors with file:line; nothing is dropped silently.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from hw5.io import atomic_path, sha256_file
from hw5.errors import DataError
from hw5.reuse import reused

SPLITS = {"train": "Train-word.csv", "val": "Val-word.csv", "test": "Test-word.csv"}
LABELS = {"c": "contradiction", "e": "entailment", "n": "neutral"}
CLASSES = sorted(LABELS.values())          # class index order: contradiction, entailment, neutral
COMMIT = "5d6322c40368ea5fab50e406e083e537a7d97817"
DEFAULT_URL = f"https://raw.githubusercontent.com/dml-qom/FarsTail/{COMMIT}/data"
SHA256 = {
    "Train-word.csv": "552cfe796652dc5ea02d53cd23e8b9d1d6d243bbf05fea2d9f959e9b851fbdd3",
    "Val-word.csv": "a1f2a8bec45a597f5971c58911fabf3d9f7574b819bf637ab94f08f7be1c963e",
    "Test-word.csv": "d0dd25408036e5dd8587a8e0d98585b46b4a7d0057fece0992fb8d490ad44f4f",
}
# Pairs per file in the release (with SHA256: a file that lost or gained rows is caught before training).
ROWS = {"Train-word.csv": 7266, "Val-word.csv": 1537, "Test-word.csv": 1564}
HARD_COLUMNS = {"hard(hypothesis)": "hard_hypothesis", "hard(overlap)": "hard_overlap"}


@dataclass
class NLIPair:
    premise: str
    hypothesis: str
    label: int                          # index into CLASSES
    hard_hypothesis: bool = False
    hard_overlap: bool = False


# ---------------------------------------------------------------- Persian normalization
_LETTERS = str.maketrans({"ي": "ی", "ى": "ی", "ك": "ک", "ـ": None})   # Arabic yeh/kaf -> Persian; tatweel
_DIGITS = str.maketrans("٠١٢٣٤٥٦٧٨٩", "۰۱۲۳۴۵۶۷۸۹")                 # Arabic-Indic -> Persian digits
ZWNJ = "\u200c"
# Directional marks typed between two letters are ZWNJ substitutes (common in Persian keyboards' output)
_MARK_AS_ZWNJ = re.compile(r"(?<=\w)[\u200e\u200f\u200b](?=\w)")
_INVISIBLE = re.compile(r"[\u200b\u200e\u200f\ufeff\u200d]")
_ZWNJ_RUNS = re.compile(ZWNJ + "{2,}")
_ZWNJ_AT_EDGE = re.compile(rf"\s*{ZWNJ}\s+|\s+{ZWNJ}\s*|^{ZWNJ}+|{ZWNJ}+$")
_SPACES = re.compile(r"\s+")


def normalize_persian(text: str) -> str:
    """Unify letter and digit variants, clean ZWNJ and whitespace (idempotent)."""
    text = text.translate(_LETTERS).translate(_DIGITS)
    text = _MARK_AS_ZWNJ.sub(ZWNJ, text)
    text = _INVISIBLE.sub("", text)
    text = _ZWNJ_RUNS.sub(ZWNJ, text)
    text = _ZWNJ_AT_EDGE.sub(" ", text)
    return _SPACES.sub(" ", text).strip()


def normalization_report(texts: list[str]) -> dict[str, int]:
    """How many texts each rule touches (reported by `hw5 stats nli`)."""
    rules = {"arabic_letters": lambda t: t != t.translate(_LETTERS),
             "arabic_digits": lambda t: t != t.translate(_DIGITS),
             "invisible_marks": lambda t: bool(_INVISIBLE.search(t)),
             "zwnj_cleanup": lambda t: bool(_ZWNJ_RUNS.search(t) or _ZWNJ_AT_EDGE.search(t)),
             "whitespace": lambda t: t != _SPACES.sub(" ", t).strip(),
             "any_change": lambda t: t != normalize_persian(t)}
    return {name: sum(1 for t in texts if rule(t)) for name, rule in rules.items()}


# ---------------------------------------------------------------- locate / download
def farstail_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "farstail"


def ensure_farstail(data_dir: Path, url: str | None = None, offline: bool | None = None) -> Path:
    """Return the folder with the three CSVs, downloading (and verifying) any that is missing."""
    folder = farstail_dir(data_dir)
    missing = [name for name in SPLITS.values() if not (folder / name).exists()]
    if not missing:
        return folder
    if offline is None:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HW5_OFFLINE") == "1"
    where = f"put {', '.join(SPLITS.values())} in {folder}/ (from github.com/dml-qom/FarsTail, folder data/) " \
            f"or point HW5_DATA_DIR / --data-dir at a folder holding farstail/"
    if offline:
        raise DataError(f"FarsTail missing ({', '.join(missing)}) and offline: {where}")
    base = url or os.environ.get("HW5_FARSTAIL_URL") or DEFAULT_URL
    for name in missing:
        _download_verified(f"{base.rstrip('/')}/{name}", folder / name, SHA256[name], where)
    return folder


def _download_verified(url: str, dest: Path, sha256: str, where: str) -> None:
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, atomic_path(dest) as tmp:
            digest = hashlib.sha256()
            with open(tmp, "wb") as out:
                while chunk := resp.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != sha256:
                raise DataError(f"{url}: checksum mismatch (got {digest.hexdigest()[:12]}…, "
                                f"expected {sha256[:12]}…); nothing written. {where}")
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(f"could not download {url} ({exc}); {where}") from None
    print(f"downloaded {dest} (sha256 ok)", flush=True)


# ---------------------------------------------------------------- parse
def read_split(data_dir: Path, split: str, normalize: bool = True) -> list[NLIPair]:
    """Parse one split strictly; every bad row is reported as file:line."""
    path = farstail_dir(data_dir) / SPLITS[split]
    pairs, errors = [], []
    reader = csv.reader(io.StringIO(_utf8_text(path), newline=""), delimiter="\t")
    header = next(reader, None)
    expected = ["premise", "hypothesis", "label"] + (list(HARD_COLUMNS) if split == "test" else [])
    if header is None or [h.strip() for h in header[:len(expected)]] != expected:
        raise DataError(f"{path}:1: header {header} should start with {expected}")
    for row in reader:
        pair = _parse_row(row, len(header), errors, f"{path}:{reader.line_num}")
        if pair:
            pairs.append(pair)
    if errors:
        shown = "\n  ".join(errors[:10]) + (f"\n  … and {len(errors) - 10} more" if len(errors) > 10 else "")
        raise DataError(f"{path}: {len(errors)} malformed row(s); fix or replace the file:\n  {shown}")
    if normalize:
        for p in pairs:
            p.premise, p.hypothesis = normalize_persian(p.premise), normalize_persian(p.hypothesis)
    return pairs


def _utf8_text(path: Path) -> str:
    """The file as text; bytes that are not UTF-8 (another encoding, a file cut inside a character)
    are one error naming the line."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}; "
                        f"{exc.reason}): the file is damaged or in another encoding; restore it (delete it, "
                        f"then `hw5 prepare nli`) or save it as UTF-8") from None


def _parse_row(row: list[str], width: int, errors: list[str], where: str) -> NLIPair | None:
    if not any(cell.strip() for cell in row):
        errors.append(f"{where}: empty row")
        return None
    if len(row) != width:
        errors.append(f"{where}: {len(row)} columns, expected {width} (unbalanced quotes?)")
        return None
    label = row[2].strip()
    if label not in LABELS:
        errors.append(f"{where}: unknown label {label!r} (expected one of e, c, n)")
        return None
    if not row[0].strip() or not row[1].strip():
        errors.append(f"{where}: empty premise or hypothesis")
        return None
    flags = [cell.strip() for cell in row[3:]]
    if any(f not in ("0", "1") for f in flags):
        errors.append(f"{where}: hard-subset flags {flags} must be 0 or 1")
        return None
    hard = [f == "1" for f in flags] + [False, False]
    return NLIPair(row[0], row[1], CLASSES.index(LABELS[label]), hard[0], hard[1])


def load_farstail(data_dir: Path, normalize: bool = True) -> dict[str, list[NLIPair]]:
    """All three splits, downloading them first if needed (read once per packed job: hw5.reuse)."""
    def load() -> dict[str, tuple[NLIPair, ...]]:
        ensure_farstail(data_dir)
        splits = {split: read_split(data_dir, split, normalize) for split in SPLITS}
        check_release(data_dir, splits)
        return {split: tuple(pairs) for split, pairs in splits.items()}
    shared = reused("farstail", (str(Path(data_dir).resolve()), normalize), load)
    return {split: list(pairs) for split, pairs in shared.items()}


def check_release(data_dir: Path, splits: dict[str, list[NLIPair]]) -> None:
    """A file with another row count than the release (and another hash) is an error, never a smaller
    training set; one with the release's count but other bytes is used, with a note."""
    for split, pairs in splits.items():
        name = SPLITS[split]
        path = farstail_dir(data_dir) / name
        if sha256_file(path) == SHA256[name]:
            continue
        if len(pairs) != ROWS[name]:
            raise DataError(f"{path}: {len(pairs):,} pairs, but the FarsTail release has {ROWS[name]:,} and this "
                            f"file's sha256 differs from the release's: rows were lost or added; restore it "
                            f"(delete it, then `hw5 prepare nli`)")
        print(f"note: {path} differs from the FarsTail release (same {ROWS[name]:,} pairs, other bytes); "
              f"runs record its fingerprint", flush=True)
