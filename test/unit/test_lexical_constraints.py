"""The helper that writes the captioner's JSON input from tab-separated phrases (imcap.lexical_constraints)."""
import io
import json

from imcap.captioner import parse_input
from imcap.lexical_constraints import convert, json_line, main


def test_json_line():
    assert json.loads(json_line("photos/1.jpg\ta red car\tdog")) == {"image": "photos/1.jpg",
                                                                      "constraints": ["a red car", "dog"]}
    assert json.loads(json_line("a.npy\tblurry", avoid=True)) == {"image": "a.npy", "avoid": ["blurry"]}
    assert json.loads(json_line(" a.npy \t \t\tcaf\u00e9 \t")) == {"image": "a.npy", "constraints": ["caf\u00e9"]}
    assert json.loads(json_line("a.npy")) == {"image": "a.npy", "constraints": []}
    assert json_line("") == "" and json_line("\tdog") == ""


def test_one_line_out_per_line_in_and_the_captioner_reads_them():
    errors = io.StringIO()
    sink = io.StringIO()
    source = io.BytesIO(b"a.npy\ta dog\r\n\nb\xff.npy\tx\nc.npy\t\"two\" words\n")
    assert convert(source, sink, errors=errors) == 4
    lines = sink.getvalue().split("\n")
    assert len(lines) == 5 and lines[1] == lines[2] == "" and lines[4] == ""
    assert errors.getvalue() == "Warning: line 3: not valid UTF-8 (invalid start byte): written empty\n"
    item = parse_input(lines[3], json_input=True, line=4)
    assert item.path == "c.npy" and item.constraints == ['"two" words']


def test_main_with_files(tmp_path):
    (tmp_path / "in.tsv").write_text("x.npy\tblurry\tdark\n", encoding="utf-8")
    main(["--avoid", "--input", str(tmp_path / "in.tsv"), "--output", str(tmp_path / "out.json")])
    assert json.loads((tmp_path / "out.json").read_text(encoding="utf-8")) == {"image": "x.npy",
                                                                                "avoid": ["blurry", "dark"]}
