"""`trl_ext.data.records`, the JSON / JSONL reader of the RLHF pipeline's stage data and the image-edit benchmark."""

import json

import pytest

from trl_ext.data.records import JSONLineError, read_json, read_jsonl, records_of
from trl_ext.evaluation.image_edit.data import EditDataError, load_edit_items
from trl_ext.pipelines.data import load_stage_data


def test_jsonl_lines_are_numbered_from_one_blank_lines_counted_and_a_bad_line_named(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n"text"\n   \n[2]\n')
    assert read_jsonl(str(path)) == ([(1, {"a": 1}), (3, "text"), (5, [2])], 2)
    path.write_text('{"a": 1}\n\n{"a": \n')
    with pytest.raises(JSONLineError, match=r"rows\.jsonl:3: not valid JSON") as error:
        read_jsonl(str(path))
    assert error.value.line_number == 3


def test_json_records_and_the_data_object_rules(tmp_path):
    assert records_of([1, 2]) == [1, 2] and records_of({"data": [1], "meta": [3]}) == [1]
    assert records_of({"rows": [1]}) is None and records_of({"data": 1}) is None and records_of("x") is None
    assert records_of({"rows": [1]}, any_key=True) == [1] and records_of({"a": [1], "b": [2]}, any_key=True) is None
    path = tmp_path / "data.json"
    path.write_text(json.dumps({"data": [{"prompt": "hi"}]}))
    assert read_json(str(path)) == {"data": [{"prompt": "hi"}]}


def test_an_empty_json_file_is_named_by_both_loaders(tmp_path):
    path = tmp_path / "data.json"
    path.write_text("  \n")
    with pytest.raises(ValueError, match=r"data\.json: the file is empty\."):
        load_stage_data(str(path), "ppo")
    with pytest.raises(EditDataError, match=r"data\.json: the file is empty\."):
        load_edit_items(str(path))


def test_each_loader_keeps_its_messages(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"prompt": "a"}\n\n{"prompt": \n')
    with pytest.raises(ValueError, match=r"rows\.jsonl:3: not valid JSON"):
        load_stage_data(str(path), "ppo")
    with pytest.raises(EditDataError, match=r"^Record 2 \(line 3\): Expecting value: line 2 column 1 \(char 12\)"):
        load_edit_items(str(path))
