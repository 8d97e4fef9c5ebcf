"""FarsTail: strict parsing of the real files, clear errors on bad rows, checksummed download."""
from __future__ import annotations

import functools
import http.server
import shutil
import threading
from collections import Counter

import pytest

from hw5.data.farstail import (CLASSES, DataError, ensure_farstail, normalize_persian, read_split)


def test_real_splits_parse_completely(data_dir):
    counts = {s: Counter(CLASSES[p.label] for p in read_split(data_dir, s)) for s in ("train", "val", "test")}
    assert counts["train"] == {"neutral": 2448, "entailment": 2429, "contradiction": 2389}
    assert sum(counts["val"].values()) == 1537 and sum(counts["test"].values()) == 1564
    test = read_split(data_dir, "test")
    assert sum(p.hard_hypothesis for p in test) == 699 and sum(p.hard_overlap for p in test) == 681


def test_quoted_tabs_stay_inside_fields(tmp_path):
    folder = tmp_path / "farstail"
    folder.mkdir()
    (folder / "Train-word.csv").write_text('premise\thypothesis\tlabel\n"a\tb"\tc\te\n', encoding="utf-8")
    [pair] = read_split(tmp_path, "train")
    assert pair.premise == "a b" and CLASSES[pair.label] == "entailment"


@pytest.mark.parametrize("row, message", [
    ("a\tb\tx", "Train-word.csv:3: unknown label 'x'"),
    ("a\tb", "Train-word.csv:3: 2 columns, expected 3"),
    ('"a\tb\te', "Train-word.csv:3: 1 columns, expected 3"),
    ("\tb\te", "Train-word.csv:3: empty premise"),
])
def test_bad_rows_are_reported_with_file_and_line(tmp_path, row, message):
    folder = tmp_path / "farstail"
    folder.mkdir()
    (folder / "Train-word.csv").write_text(f"premise\thypothesis\tlabel\np\th\tn\n{row}\n", encoding="utf-8")
    with pytest.raises(DataError, match=message.replace("(", r"\(")):
        read_split(tmp_path, "train")


def test_normalization_unifies_letters_digits_and_zwnj():
    raw = "  كتاب\u200c\u200c ها  ي ٣ ۴\u200eها\tمی\u200c "
    assert normalize_persian(raw) == "کتاب ها ی ۳ ۴\u200cها می"
    assert normalize_persian(normalize_persian(raw)) == normalize_persian(raw)


@pytest.fixture
def http_server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving tmp_path/served."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield served, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_download_verifies_checksums(data_dir, tmp_path, http_server):
    served, url = http_server
    for name in ("Train-word.csv", "Val-word.csv", "Test-word.csv"):
        shutil.copy(data_dir / "farstail" / name, served / name)
    folder = ensure_farstail(tmp_path / "data", url=url, offline=False)
    assert len(read_split(tmp_path / "data", "val")) == 1537
    assert sorted(p.name for p in folder.iterdir()) == ["Test-word.csv", "Train-word.csv", "Val-word.csv"]


def test_tampered_download_leaves_nothing(tmp_path, http_server):
    served, url = http_server
    for name in ("Train-word.csv", "Val-word.csv", "Test-word.csv"):
        (served / name).write_text("premise\thypothesis\tlabel\n", encoding="utf-8")
    with pytest.raises(DataError, match="checksum mismatch"):
        ensure_farstail(tmp_path / "data", url=url, offline=False)
    assert not any((tmp_path / "data" / "farstail").iterdir())


def test_offline_without_files_says_where_to_put_them(tmp_path):
    with pytest.raises(DataError, match=r"offline: put Train-word.csv, Val-word.csv, Test-word.csv in"):
        ensure_farstail(tmp_path, offline=True)


def test_unreachable_server_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="could not download http://127.0.0.1:9/Train-word.csv"):
        ensure_farstail(tmp_path, url="http://127.0.0.1:9", offline=False)
