"""alignkit.data.loading: every format from JSONL files, lists and datasets.Dataset; errors name the file,
the row and the field; skip_invalid counts what it drops; optional tests on the real HH-RLHF and GSM8K files."""

import gzip
import json
import pathlib
import warnings

import pytest

from alignkit.data import FORMATS, DataError, Rows, load_rows

datasets = pytest.importorskip("datasets")

H, A = "\n\nHuman:", "\n\nAssistant:"
MSGS = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]

# format -> (raw rows, normalised rows). Every raw row of a format has the same keys (a Dataset built from
# rows with different keys fills the missing ones with None).
SAMPLES = {
    "prompt_completion": (
        [{"prompt": "the cat", "completion": " sat", "id": 1}, {"prompt": "a dog", "completion": " ran", "id": 2}],
        [{"prompt": "the cat", "completion": " sat", "id": 1}, {"prompt": "a dog", "completion": " ran", "id": 2}],
    ),
    "messages": (
        [{"messages": MSGS}, {"messages": [{"role": "system", "content": "be kind"}, *MSGS]}],
        [{"messages": MSGS}, {"messages": [{"role": "system", "content": "be kind"}, *MSGS]}],
    ),
    "preference": (
        [{"prompt": "p", "chosen": " good", "rejected": " bad"}, {"prompt": "q", "chosen": " yes", "rejected": " no"}],
        [{"prompt": "p", "chosen": " good", "rejected": " bad"}, {"prompt": "q", "chosen": " yes", "rejected": " no"}],
    ),
    "hh_rlhf": (
        [{"chosen": f"{H} hi{A} Hello!", "rejected": f"{H} hi{A} Go away."},
         {"chosen": f"{H} a{A} b{H} c{A} Sure, d", "rejected": f"{H} a{A} b{H} c{A} Sure, e"}],
        [{"prompt": f"{H} hi{A}", "chosen": " Hello!", "rejected": " Go away."},
         {"prompt": f"{H} a{A} b{H} c{A}", "chosen": " Sure, d", "rejected": " Sure, e"}],
    ),
    "prompt": (
        [{"prompt": "2+2=", "answer": "4"}, {"prompt": "3+3=", "answer": "6"}],
        [{"prompt": "2+2=", "answer": "4"}, {"prompt": "3+3=", "answer": "6"}],
    ),
    "gsm8k": (
        [{"question": "Two ducks and one more?", "answer": "2 + 1 = <<2+1=3>>3\n#### 3"},
         {"question": "Half of 18?", "answer": "18 / 2 = 9\n#### 9"}],
        [{"prompt": "Two ducks and one more?", "answer": "2 + 1 = <<2+1=3>>3\n#### 3"},
         {"prompt": "Half of 18?", "answer": "18 / 2 = 9\n#### 9"}],
    ),
    "chat_prompt": (  # messages whose last turn is the user's: a prompt for sampling
        [{"messages": MSGS[:1]}, {"messages": [{"role": "system", "content": "be kind"}, MSGS[0]]}],
        [{"messages": MSGS[:1]}, {"messages": [{"role": "system", "content": "be kind"}, MSGS[0]]}],
    ),
}
assert set(SAMPLES) == set(FORMATS)


def _write_jsonl(path: pathlib.Path, rows, opener=open) -> pathlib.Path:
    with opener(path, "wt", encoding="utf-8") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


def _source(kind: str, rows, tmp_path: pathlib.Path):
    if kind == "jsonl":
        return _write_jsonl(tmp_path / "data.jsonl", rows)
    if kind == "jsonl.gz":
        return _write_jsonl(tmp_path / "data.jsonl.gz", rows, gzip.open)
    if kind == "json":
        path = tmp_path / "data.json"
        path.write_text(json.dumps(rows, indent=1))
        return path
    if kind == "list":
        return rows
    return datasets.Dataset.from_list(rows)


LOCATION = {"jsonl": "data.jsonl line {}", "jsonl.gz": "data.jsonl.gz line {}", "json": "data.json record {}",
            "list": "rows[{}]", "dataset": "dataset[{}]"}


@pytest.mark.parametrize("kind", ["jsonl", "list", "dataset"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_loads_from_every_source(fmt, kind, tmp_path):
    raw, expected = SAMPLES[fmt]
    source = _source(kind, raw, tmp_path)
    for given in (fmt, None):  # explicit, and detected from the keys
        rows = load_rows(source, format=given)
        assert isinstance(rows, Rows) and isinstance(rows, list)
        assert rows == expected
        assert rows.format == fmt and rows.skipped == 0 and rows.problems == []
    first = 1 if kind.startswith("json") else 0
    assert [loc.rsplit("/", 1)[-1] for loc in rows.locations] == [LOCATION[kind].format(first + i) for i in range(2)]
    assert rows.source == (str(source) if kind == "jsonl" else kind.replace("list", "rows"))


@pytest.mark.parametrize("kind", ["jsonl.gz", "json"])
def test_gzip_and_json_array_files(kind, tmp_path):
    raw, expected = SAMPLES["preference"]
    rows = load_rows(_source(kind, raw, tmp_path))
    assert rows == expected
    assert rows.locations[1].endswith(LOCATION[kind].format(2))


def test_json_lines_under_a_json_name_and_blank_lines(tmp_path):
    raw, expected = SAMPLES["prompt"]
    path = tmp_path / "lines.json"
    path.write_text("\n" + json.dumps(raw[0]) + "\n\n   \n" + json.dumps(raw[1]) + "\n")
    rows = load_rows(path)
    assert rows == expected and rows.skipped == 0
    assert rows.locations == [f"{path} line 2", f"{path} line 5"]  # blank lines are not rows, still counted


def test_pathlike_and_str_paths_agree(tmp_path):
    path = _write_jsonl(tmp_path / "d.jsonl", SAMPLES["prompt"][0])
    assert load_rows(path) == load_rows(str(path))


# -------------------------------------------------------------------------------------------- bad rows
GOOD = {"prompt": "p", "chosen": " a", "rejected": " b"}


@pytest.mark.parametrize(
    "bad_line, field, problem",
    [
        ('{"prompt": "p", "chosen": " a", ', None, "is not valid JSON"),
        ('["p", " a", " b"]', None, "must be a JSON object"),
        ('{"prompt": "p", "chosen": " a"}', "rejected", "is missing"),
        ('{"prompt": "p", "chosen": " a", "rejected": 5}', "rejected", "must be a string, got int"),
        ('{"prompt": "", "chosen": " a", "rejected": " b"}', "prompt", "is empty"),
        ('{"prompt": "p", "chosen": " a", "rejected": " a"}', "rejected", "identical to 'chosen'"),
    ],
)
def test_a_bad_row_in_a_file_names_the_file_the_line_and_the_field(bad_line, field, problem, tmp_path):
    # line 1 good, line 2 blank, line 3 good, line 4 bad, line 5 bad too: the first bad one (4) is named.
    path = _write_jsonl(tmp_path / "bad.jsonl", [GOOD, "", GOOD, bad_line, bad_line])
    with pytest.raises(DataError) as e:
        load_rows(path, format="preference")
    err = e.value
    assert isinstance(err, ValueError)
    assert str(err).startswith(f"{path} line 4: ")
    assert (err.source, err.row, err.field, err.location) == (str(path), 4, field, f"{path} line 4")
    assert problem in str(err)
    if field:
        assert f"field {field!r}" in str(err)


def test_the_first_bad_row_is_named_with_detection_too(tmp_path):
    path = _write_jsonl(tmp_path / "bad.jsonl", [GOOD, GOOD, {"prompt": "p", "chosen": None, "rejected": "b"}])
    with pytest.raises(DataError, match=r"bad\.jsonl line 3: field 'chosen': is missing \(null\)"):
        load_rows(path)


def test_undecodable_bytes_are_named_at_their_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b'\n{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n')
    with pytest.raises(DataError, match=r"latin1\.jsonl line 2: is not valid UTF-8"):
        load_rows(path)


def test_in_memory_rows_are_named_by_index():
    with pytest.raises(DataError, match=r"^rows\[1\]: field 'completion': is missing$"):
        load_rows([{"prompt": "p", "completion": "c"}, {"prompt": "p"}], format="prompt_completion")
    ds = datasets.Dataset.from_list([{"prompt": "p", "completion": "c"}, {"prompt": "p", "completion": None}])
    with pytest.raises(DataError, match=r"^dataset\[1\]: field 'completion': is missing \(null\)$"):
        load_rows(ds)


def test_skip_invalid_drops_and_counts(tmp_path):
    bad_json, missing = '{"prompt": ', {"prompt": "p", "chosen": " a"}
    path = _write_jsonl(tmp_path / "mixed.jsonl", [GOOD, bad_json, GOOD, missing, {**GOOD, "rejected": " a"}, GOOD])
    with pytest.raises(DataError, match="line 2"):
        load_rows(path)
    with pytest.warns(RuntimeWarning, match=r"mixed\.jsonl: skipped 3 invalid row\(s\) of 6 read; the first: .*line 2"):
        rows = load_rows(path, skip_invalid=True)
    assert rows == [GOOD] * 3
    assert rows.skipped == 3
    assert [(p.row, p.field) for p in rows.problems] == [(2, None), (4, "rejected"), (5, "rejected")]
    assert rows.locations == [f"{path} line {n}" for n in (1, 3, 6)]


def test_skip_invalid_detects_the_format_from_the_first_object(tmp_path):
    path = _write_jsonl(tmp_path / "d.jsonl", ["not json", json.dumps(SAMPLES["gsm8k"][0][0])])
    with pytest.warns(RuntimeWarning, match="skipped 1"):
        rows = load_rows(path, skip_invalid=True)
    assert rows.format == "gsm8k" and rows == SAMPLES["gsm8k"][1][:1]


def test_no_valid_rows_is_an_error_even_when_skipping(tmp_path):
    path = _write_jsonl(tmp_path / "d.jsonl", [{"prompt": ""}, {"prompt": 1}])
    with pytest.raises(DataError, match=r"has no valid rows \(2 read, 2 invalid\); the first problem: .*line 1"):
        load_rows(path, skip_invalid=True)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(DataError, match=r"empty\.jsonl: has no valid rows \(0 read"):
        load_rows(empty)
    with pytest.raises(DataError, match="^rows: has no valid rows"):
        load_rows([])


def test_an_undetectable_first_row_is_an_error_even_when_skipping(tmp_path):
    path = _write_jsonl(tmp_path / "d.jsonl", [{"text": "x"}, {"prompt": "p"}])
    with pytest.raises(DataError, match=r"d\.jsonl line 1: cannot detect the format from the keys \['text'\]"):
        load_rows(path, skip_invalid=True)


def test_whole_file_problems(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_rows(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_rows(tmp_path / "data.csv")
    obj = tmp_path / "obj.json"
    obj.write_text('{"prompt": "p"}')
    with pytest.raises(DataError, match="holds a JSON dict; expected an array"):
        load_rows(obj)
    broken = tmp_path / "broken.json"
    broken.write_text('[{"prompt": "p"},')
    with pytest.raises(DataError, match=r"broken\.json: is not valid JSON"):
        load_rows(broken)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown format 'sft'"):
        load_rows([{"prompt": "p"}], format="sft")
    with pytest.raises(TypeError, match="got a DatasetDict with splits \\['train'\\]"):
        load_rows(datasets.DatasetDict({"train": datasets.Dataset.from_list([{"prompt": "p"}])}))
    with pytest.raises(TypeError, match="source must be"):
        load_rows({"prompt": "p"})
    with pytest.raises(ValueError, match="max_rows"):
        load_rows([{"prompt": "p"}], max_rows=0)


def test_max_rows_stops_reading(tmp_path):
    # Line 4 is broken, but reading stops after 3 kept rows.
    path = _write_jsonl(tmp_path / "d.jsonl", [{"prompt": "a"}, {"prompt": "b"}, {"prompt": "c"}, "{broken"])
    assert load_rows(path, max_rows=3) == [{"prompt": "a"}, {"prompt": "b"}, {"prompt": "c"}]


def test_locations_follow_rows_when_reordered():
    rows = load_rows([{"prompt": "a"}, {"prompt": "b"}, {"prompt": "c"}])
    rows.reverse()
    assert rows.locations == ["rows[2]", "rows[1]", "rows[0]"]
    rows[0] = {"prompt": "new"}  # not one of the loaded rows: named by its index
    assert rows.where(0) == "row 0"


# -------------------------------------------------------------------------------- real data (optional)
REAL = pathlib.Path("/work/shared/data")
HH_FILE, GSM8K_FILE = REAL / "hh-rlhf-harmless-base-test.jsonl.gz", REAL / "gsm8k-test.jsonl"


@pytest.mark.skipif(not HH_FILE.exists(), reason=f"{HH_FILE} not present")
def test_real_hh_rlhf_first_50_rows():
    rows = load_rows(HH_FILE, max_rows=50)
    assert len(rows) == 50 and rows.format == "hh_rlhf" and rows.skipped == 0
    with gzip.open(HH_FILE, "rt", encoding="utf-8") as f:
        raw = [json.loads(next(f)) for _ in range(50)]
    for row, original in zip(rows, raw, strict=True):
        assert row["prompt"].startswith(H) and row["prompt"].endswith(A)
        assert row["prompt"] + row["chosen"] == original["chosen"]
        assert row["prompt"] + row["rejected"] == original["rejected"]


@pytest.mark.skipif(not HH_FILE.exists(), reason=f"{HH_FILE} not present")
def test_real_hh_rlhf_whole_file_skip_invalid_names_the_malformed_transcripts():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        rows = load_rows(HH_FILE, skip_invalid=True)
    assert len(rows) + rows.skipped == 2312
    # The harmless-base test split has 4 transcripts whose chosen reply is empty ("...\n\nAssistant: ") and 5
    # whose reply after the shared prompt holds another "\n\nAssistant:" turn (a made-up continuation of the
    # dialogue), so no single final turn is being compared.
    problems = [(p.row, p.field, "empty" if "empty response" in p.problem else "turn") for p in rows.problems]
    assert problems == [(87, "chosen", "empty"), (517, "chosen", "empty"), (926, "chosen", "empty"),
                        (1104, "chosen", "empty"), (1255, "chosen", "turn"), (1689, "chosen", "turn"),
                        (1951, "rejected", "turn"), (1953, "chosen", "turn"), (2037, "chosen", "turn")]


@pytest.mark.skipif(not GSM8K_FILE.exists(), reason=f"{GSM8K_FILE} not present")
def test_real_gsm8k_first_50_rows():
    rows = load_rows(GSM8K_FILE, max_rows=50)
    assert len(rows) == 50 and rows.format == "gsm8k"
    assert set(rows[0]) == {"prompt", "answer"}
    assert rows[0]["prompt"].startswith("Janet") and rows[0]["answer"].endswith("#### 18")


def test_a_truncated_gzip_file_is_a_data_error_naming_the_file(tmp_path):
    rows = b"".join(json.dumps({"prompt": f"p{i}", "completion": "c" * 50}).encode() + b"\n" for i in range(2000))
    data = gzip.compress(rows)
    for name in ("cut.jsonl.gz", "cut.json.gz"):
        path = tmp_path / name
        path.write_bytes(data[: len(data) // 2])
        for skip in (False, True):  # skip_invalid skips bad rows, never a damaged file
            with pytest.raises(DataError, match=f"{name}: is damaged: the compressed stream ends early"):
                load_rows(path, skip_invalid=skip)
    not_gzip = tmp_path / "plain.jsonl.gz"
    not_gzip.write_bytes(rows[:1000])
    with pytest.raises(DataError, match="plain.jsonl.gz: is damaged.*BadGzipFile"):
        load_rows(not_gzip, skip_invalid=True)
