"""ShEMO names, the corpus listing and `hw5 prepare ser` (small zips, a local HTTP server)."""
from __future__ import annotations

import csv
import functools
import http.server
import io
import json
import threading
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from hw5.data.shemo import (EMOTIONS, DataError, list_corpus,
                            load_modified_labels, parse_shemo_name, prepare_shemo, read_files_table)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "shemo"
SMALL = {"female": ["F01A01.wav", "F01F01.wav", "F02N03.wav"], "male": ["M01H01.wav", "M03W02.wav"]}


def test_every_release_name_parses_to_its_metadata():
    rows = read_files_table()
    parsed = [parse_shemo_name(row["wav"]) for row in rows]
    for row, clip in zip(rows, parsed):
        assert (clip.speaker, clip.gender, clip.emotion) == (row["speaker"], row["gender"],
                                                             row["emotion_filename"])
    # the release's published numbers: 3,000 clips of 87 speakers, 38 of them fear
    assert Counter(c.emotion for c in parsed) == {"anger": 1059, "neutral": 1028, "sadness": 449,
                                                  "surprise": 225, "happiness": 201, "fear": 38}
    assert Counter(c.gender for c in parsed) == {"female": 1263, "male": 1737}
    assert len({c.speaker for c in parsed}) == 87
    assert parse_shemo_name("M12W07.wav").index == 7


@pytest.mark.skipif(not (SHARED / "shemo_files.csv").is_file(), reason="shared metadata not here")
def test_packaged_table_is_the_shared_metadata():
    with open(SHARED / "shemo_files.csv", newline="", encoding="utf-8") as fh:
        shared = [(r["wav"], r["speaker"], r["gender"], r["emotion_filename"]) for r in csv.DictReader(fh)]
    packaged = [(r["wav"], r["speaker"], r["gender"], r["emotion_filename"]) for r in read_files_table()]
    assert packaged == shared


@pytest.mark.parametrize("name", ["F01A01.mp3", "X01A01.wav", "F1A01.wav", "F01B01.wav",
                                  "f01a01.wav", "F01A01.wav.bak", "F01A001.wav", ""])
def test_bad_names_are_rejected_with_the_name(name):
    with pytest.raises(DataError, match="not a ShEMO file name") as info:
        parse_shemo_name(name)
    assert name in str(info.value)


def wav_bytes(seconds: float = 0.1, rate: int = 44100, seed: int = 0) -> bytes:
    """A real (tiny) 16-bit mono WAV file's bytes."""
    buffer = io.BytesIO()
    samples = np.random.default_rng(seed).uniform(-0.1, 0.1, int(seconds * rate))
    sf.write(buffer, samples, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _tree(root: Path, names: dict[str, list[str]], content: bytes | None = None) -> Path:
    for gender, files in names.items():
        (root / gender).mkdir(parents=True, exist_ok=True)
        for name in files:
            (root / gender / name).write_bytes(wav_bytes() if content is None else content)
    return root


def test_list_corpus_labels_and_paths(tmp_path):
    clips = list_corpus(_tree(tmp_path / "shemo", SMALL))
    assert [c.name for c in clips] == sorted(SMALL["female"] + SMALL["male"])
    first = clips[0]
    assert (first.label, first.label_index, first.speaker) == ("anger", 0, "F01")
    assert Path(first.path) == tmp_path / "shemo" / "female" / "F01A01.wav"
    assert {c.label for c in clips} == {"anger", "fear", "neutral", "happiness", "surprise"}


def test_list_corpus_reports_every_odd_file_at_once(tmp_path, capsys):
    root = _tree(tmp_path / "shemo", {"female": ["F01A01.wav", "M02A01.wav", "notes.txt",
                                                 "F01X01.wav", ".DS_Store", "Thumbs.db"], "male": ["M01H01.wav"]})
    (root / "female" / "F01N01.wav").write_bytes(b"")                  # empty
    (root / "male" / "M01S01.wav").write_bytes(b"not audio at all")    # garbage
    cut = wav_bytes(seconds=0.5)
    (root / "male" / "M01W01.wav").write_bytes(cut[: len(cut) // 2])   # truncated
    with pytest.raises(DataError) as info:
        list_corpus(root)
    message = str(info.value)
    assert "6 problem(s)" in message, message                       # naming and content, in one pass
    assert "female/M02A01.wav" in message and "move it to male/" in message
    assert "female/notes.txt: not a .wav file" in message
    assert "female/F01X01.wav: not a ShEMO name" in message
    assert "female/F01N01.wav: empty file (0 bytes)" in message
    assert "male/M01S01.wav: cannot decode" in message and "male/M01W01.wav: truncated" in message
    assert ".DS_Store" not in message and "Thumbs.db" not in message
    assert "skipped 2 file(s) that unzip tools add (female/.DS_Store, female/Thumbs.db)" in capsys.readouterr().err


def test_list_corpus_missing_folder_and_missing_files(tmp_path):
    with pytest.raises(DataError, match="male: folder missing"):
        list_corpus(_tree(tmp_path / "a", {"female": ["F01A01.wav"]}))
    with pytest.raises(DataError, match="hw5 prepare ser"):
        list_corpus(tmp_path / "nowhere")
    with pytest.raises(DataError, match="2995 of 3000 expected file") as info:
        list_corpus(_tree(tmp_path / "b", SMALL), expect_full=True)
    assert "missing: F01A02.wav" in str(info.value)


def test_modified_labels_switch(tmp_path):
    root = _tree(tmp_path / "shemo", SMALL)
    entries = {name: {"emotion": "neutral" if name == "F01A01.wav" else parse_shemo_name(name).emotion}
               for names in SMALL.values() for name in names}
    (root / "modified_shemo.json").write_text(json.dumps(entries), encoding="utf-8")
    by_name = {c.name: c for c in list_corpus(root, label_source="modified")}
    assert (by_name["F01A01.wav"].emotion, by_name["F01A01.wav"].label) == ("anger", "neutral")
    assert by_name["M03W02.wav"].label == "surprise"
    del entries["M01H01.wav"]
    (tmp_path / "partial.json").write_text(json.dumps(entries), encoding="utf-8")
    with pytest.raises(DataError, match="no Modified-ShEMO label for 1 clip"):
        list_corpus(root, label_source="modified", modified_path=tmp_path / "partial.json")
    with pytest.raises(DataError, match="copy modified_shemo.json"):
        list_corpus(root, label_source="modified", modified_path=tmp_path / "absent.json")
    with pytest.raises(DataError, match="label_source 'other'"):
        list_corpus(root, label_source="other")


@pytest.mark.skipif(not (SHARED / "modified_shemo.json").is_file(), reason="shared metadata not here")
def test_real_modified_labels_relabel_163_files():
    modified = load_modified_labels(SHARED / "modified_shemo.json")
    official = {r["wav"]: r["emotion_filename"] for r in read_files_table()}
    assert set(modified) == set(official)
    assert sum(modified[n] != official[n] for n in official) == 163
    assert set(modified.values()) == set(EMOTIONS)


# ------------------------------------------------------------------ prepare (zips, download)
def _zip(path: Path, gender: str, names: list[str], prefix: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{prefix}{gender}/", "")
        for name in names:
            archive.writestr(f"{prefix}{gender}/{name}", wav_bytes(seed=len(name) + ord(name[-5])))
        archive.writestr(f"__MACOSX/{gender}/._{names[0]}", "resource fork")
    return path


def _release(folder: Path) -> Path:
    for gender, names in SMALL.items():
        _zip(folder / f"{gender}.zip", gender, names)
    return folder


EXPECTED = SMALL["female"] + SMALL["male"]


def _leftovers(data_dir: Path) -> list[str]:
    return sorted(p.name for p in (data_dir / "shemo").glob("*")) if (data_dir / "shemo").exists() else []


def test_prepare_from_a_folder_of_zips_then_reuse(tmp_path):
    data = tmp_path / "data"
    counts = prepare_shemo(data, zips_from=_release(tmp_path / "zips"), expected=EXPECTED)
    assert counts == {"female": 3, "male": 2}
    assert sf.info(data / "shemo" / "female" / "F02N03.wav").frames == 4410
    assert [c.name for c in list_corpus(data / "shemo")] == sorted(EXPECTED)
    assert _leftovers(data) == ["female", "male"]          # no staging folder, no OS metadata
    # prepared already: no zips needed the second time
    assert prepare_shemo(data, zips_from=tmp_path / "gone", expected=EXPECTED) == counts


def test_prepare_names_missing_zips_and_files(tmp_path):
    zips = tmp_path / "zips"
    _zip(zips / "female.zip", "female", SMALL["female"])
    with pytest.raises(DataError, match="male.zip"):
        prepare_shemo(tmp_path / "data", zips_from=zips, expected=EXPECTED)
    _zip(zips / "male.zip", "male", SMALL["male"][:1])
    with pytest.raises(DataError, match="1 of 5 expected file") as info:
        prepare_shemo(tmp_path / "data", zips_from=zips, expected=EXPECTED)
    assert "missing: M03W02.wav" in str(info.value)
    assert _leftovers(tmp_path / "data") == []             # nothing half-unpacked


def test_prepare_rejects_corrupt_and_unsafe_zips(tmp_path):
    zips = _release(tmp_path / "zips")
    whole = (zips / "male.zip").read_bytes()
    (zips / "male.zip").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match="corrupt or truncated zip") as info:
        prepare_shemo(tmp_path / "data", zips_from=zips, expected=EXPECTED)
    assert "male.zip" in str(info.value)
    assert _leftovers(tmp_path / "data") == []
    _zip(zips / "male.zip", "male", SMALL["male"], prefix="../../")
    with pytest.raises(DataError, match="unsafe member path"):
        prepare_shemo(tmp_path / "data", zips_from=zips, expected=EXPECTED)
    assert not list(tmp_path.glob("**/M01H01.wav"))        # nothing written anywhere
    _zip(zips / "male.zip", "male", ["F05A01.wav"])
    with pytest.raises(DataError, match="not a male ShEMO WAV"):
        prepare_shemo(tmp_path / "data", zips_from=zips, expected=EXPECTED)


def test_prepare_checks_checksums(tmp_path):
    zips = _release(tmp_path / "zips")
    with pytest.raises(DataError, match="sha256 does not match"):
        prepare_shemo(tmp_path / "data", zips_from=zips, expected=EXPECTED,
                      checksums={"female.zip": "0" * 64})


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def http_base(tmp_path):
    """A real HTTP server on 127.0.0.1 serving the small release zips."""
    root = _release(tmp_path / "served")
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    server.server_close()


def test_prepare_downloads_from_a_base_url(tmp_path, http_base):
    base, _ = http_base
    data = tmp_path / "data"
    assert prepare_shemo(data, url=base + "/", expected=EXPECTED) == {"female": 3, "male": 2}
    assert (data / "downloads" / "male.zip").is_file()
    assert not list((data / "downloads").glob(".*partial"))


def test_prepare_downloads_from_env_url_and_fails_clearly(tmp_path, http_base, monkeypatch):
    base, served = http_base
    (served / "male.zip").write_bytes(b"PK\x03\x04 not really a zip")
    monkeypatch.setenv("HW5_SHEMO_URL", base)
    with pytest.raises(DataError, match="corrupt or truncated zip"):
        prepare_shemo(tmp_path / "data", expected=EXPECTED)
    assert _leftovers(tmp_path / "data") == []
    monkeypatch.setenv("HW5_SHEMO_URL", base + "/missing")
    with pytest.raises(DataError, match="could not download .*missing/female.zip .*offline"):
        prepare_shemo(tmp_path / "other", expected=EXPECTED)
    with pytest.raises(DataError, match="could not download") as info:
        prepare_shemo(tmp_path / "other", url="http://127.0.0.1:9", expected=EXPECTED)
    assert "\n" not in str(info.value)


def test_prepare_never_replaces_a_good_tree_with_unverified_content(tmp_path):
    data = tmp_path / "data"
    prepare_shemo(data, zips_from=_release(tmp_path / "zips"), expected=EXPECTED)
    good = (data / "shemo" / "male" / "M01H01.wav").read_bytes()
    (data / "shemo" / "male" / "M03W02.wav").unlink()                 # the tree needs preparing again
    bad = tmp_path / "bad"
    _zip(bad / "female.zip", "female", SMALL["female"])
    with zipfile.ZipFile(bad / "male.zip", "w") as archive:          # right names, wrong content
        for name in SMALL["male"]:
            archive.writestr(f"male/{name}", "not audio")
    with pytest.raises(DataError, match="2 unpacked file.* not usable audio; the existing tree is kept"):
        prepare_shemo(data, zips_from=bad, expected=EXPECTED)
    assert (data / "shemo" / "male" / "M01H01.wav").read_bytes() == good
    assert _leftovers(data) == ["female", "male"]


def test_prepare_caps_member_sizes_before_writing(tmp_path, monkeypatch):
    import hw5.data.shemo as shemo
    monkeypatch.setattr(shemo, "MAX_MEMBER_BYTES", 2**16)   # a small cap stands for the real 32 MB
    zips = _release(tmp_path / "zips")
    with zipfile.ZipFile(zips / "male.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("male/M01H01.wav", b"\0" * 2**20)     # 1 MB of zeros: ~1 kB compressed
        archive.writestr("male/M03W02.wav", wav_bytes())
    with pytest.raises(DataError, match="'male/M01H01.wav' unpacks to 1 MB, more than any ShEMO clip"):
        prepare_shemo(tmp_path / "data", zips_from=zips, expected=EXPECTED)
    assert _leftovers(tmp_path / "data") == [] and not list(tmp_path.glob("data/**/*.wav"))


def test_prepare_checks_free_space_first(tmp_path, small_disk):
    data = small_disk(16)                    # a real 16 MB filesystem: less than the tree + margin
    with pytest.raises(DataError, match=r"GB free, unpacking ShEMO needs"):
        prepare_shemo(data, zips_from=_release(tmp_path / "zips"), expected=EXPECTED)
    assert not list(data.glob("**/*.wav"))
