"""VANS-Data's inputs: COIN, YouCook2 and ActivityNet Captions JSON and pairs tables, parsed
into steps in time order; every bad entry of a file listed at once, one line each naming the
file, the video id (or row) and the field; video files found by id, pairs-table paths
resolved against a video folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REAL_CLIPS, needs_real_clips
from vans.vansdata.annotations import (
    AnnotatedVideo,
    AnnotationError,
    PairRow,
    Step,
    find_video,
    load_pairs,
    load_task_names,
    load_videos,
    resolve_pair_path,
    video_index,
)


def write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_coin_steps_in_time_order_with_the_task(tmp_path) -> None:
    coin = {"database": {"vid1": {"recipe_type": 3, "class": "make tea", "annotation": [
        {"segment": [9.5, 12.0], "label": "pour water"},
        {"segment": [2.0, 7.25], "label": "boil water"},
    ]}}}  # fmt: skip
    (video,) = load_videos(write(tmp_path / "coin.json", coin), "coin")
    assert video == AnnotatedVideo(
        "vid1", (Step(2.0, 7.25, "boil water"), Step(9.5, 12.0, "pour water")), "make tea"
    )


def test_youcook2_reads_sentences_and_recipe_type(tmp_path) -> None:
    # as youcookii_annotations_trainval.json has it: `annotations`, a string recipe_type
    step = {"segment": [90, 102], "id": 0, "sentence": "spread margarine"}
    yc2 = {"database": {"GLd3aX16zBg": {"duration": 241.62, "subset": "training",
           "recipe_type": "113", "annotations": [step], "video_url": "https://x"}}}  # fmt: skip
    path = write(tmp_path / "yc2.json", yc2)
    (video,) = load_videos(path, "youcook2")
    assert video.steps == (Step(90.0, 102.0, "spread margarine"),) and video.task_name == "113"
    # label_foodtype.csv: `id,name` rows, no header
    names = tmp_path / "label_foodtype.csv"
    names.write_text("101,pizza marghetta\n113,grilled cheese\n")
    assert load_task_names(names) == {"101": "pizza marghetta", "113": "grilled cheese"}
    (video,) = load_videos(path, "youcook2", load_task_names(names))
    assert video.task_name == "grilled cheese"
    # COIN's singular key is not YouCook2's
    yc2["database"]["GLd3aX16zBg"]["annotation"] = yc2["database"]["GLd3aX16zBg"].pop("annotations")
    with pytest.raises(AnnotationError) as caught:
        load_videos(write(path, yc2), "youcook2")
    assert str(caught.value) == (
        f"{path}: video GLd3aX16zBg: annotations: must be a non-empty list of steps"
    )


def test_task_names_that_miss_a_recipe_or_are_malformed_are_listed(tmp_path) -> None:
    step = {"segment": [0, 2], "id": 0, "sentence": "crack eggs"}
    yc2 = {"database": {"a": {"recipe_type": "113", "annotations": [step]},
                        "b": {"recipe_type": "999", "annotations": [step]}}}  # fmt: skip
    path = write(tmp_path / "yc2.json", yc2)
    names = tmp_path / "names.csv"
    names.write_text("113,omelette\n")
    with pytest.raises(AnnotationError) as caught:
        load_videos(path, "youcook2", load_task_names(names))
    assert str(caught.value) == f"{path}: video b: recipe_type: '999' is not in --task-names"
    names.write_text("113,omelette\n114\n115,soup,extra\n113,fried egg\n")
    with pytest.raises(AnnotationError) as caught:
        load_task_names(names)
    assert str(caught.value).splitlines() == [
        f"{names}: line 2: must be id,name, got '114'",
        f"{names}: line 3: must be id,name, got '115,soup,extra'",
        f"{names}: line 4: id '113' is named twice",
    ]


def test_activitynet_pairs_timestamps_with_sentences(tmp_path) -> None:
    anet = {"v_QOlSCBRmfWY": {"duration": 82.73, "timestamps": [[0.83, 19.86], [17.37, 60.81]],
            "sentences": ["A woman stands.", " She dances. "]}}  # fmt: skip
    (video,) = load_videos(write(tmp_path / "anet.json", anet), "activitynet")
    assert video.steps == (Step(0.83, 19.86, "A woman stands."), Step(17.37, 60.81, "She dances."))
    assert video.task_name is None


def test_every_bad_entry_is_listed_with_file_video_and_field(tmp_path) -> None:
    coin = {"database": {
        "ok": {"annotation": [{"segment": [0, 1], "label": "a"}]},
        "v2": {"annotation": [{"segment": [5, 3], "label": "b"}, {"segment": [0, 1]}]},
        "v3": {"annotation": []},
        "v4": {"annotation": [{"segment": "0-1", "label": "c"}]},
    }}  # fmt: skip
    path = write(tmp_path / "coin.json", coin)
    with pytest.raises(AnnotationError) as caught:
        load_videos(path, "coin")
    assert str(caught.value).splitlines() == [
        f"{path}: video v2: annotation[0]: segment: needs 0 <= start < end, got [5, 3]",
        f"{path}: video v2: annotation[1]: label: must be a non-empty string",
        f"{path}: video v3: annotation: must be a non-empty list of steps",
        f"{path}: video v4: annotation[0]: segment: must be [start, end] in seconds, got '0-1'",
    ]
    anet = {"a": {"timestamps": [[0, 1]], "sentences": []}, "b": {"sentences": ["x"]}}
    path = write(tmp_path / "anet.json", anet)
    with pytest.raises(AnnotationError) as caught:
        load_videos(path, "activitynet")
    assert str(caught.value).splitlines() == [
        f"{path}: video a: sentences: must be a list as long as timestamps (1)",
        f"{path}: video b: timestamps: must be a non-empty list of [start, end]",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "invalid JSON: Expecting property name enclosed in double quotes (line 1, column 2)"),
        ('{"videos": {}}', "database: required object (video id -> entry) is missing"),
        ('{"database": {}}', "no annotated videos"),
    ],
)
def test_unreadable_files_are_one_line(tmp_path, text: str, message: str) -> None:
    path = tmp_path / "coin.json"
    path.write_text(text)
    with pytest.raises(AnnotationError) as caught:
        load_videos(path, "coin")
    assert str(caught.value) == f"{path}: {message}"
    with pytest.raises(AnnotationError, match="annotation file not found"):
        load_videos(tmp_path / "missing.json", "coin")


@needs_real_clips
def test_the_real_pairs_table_and_its_clips() -> None:
    rows = load_pairs(REAL_CLIPS / "predictive_pairs.tsv")
    assert len(rows) == 4
    assert rows[0] == PairRow(
        2,
        "video_split_scene/_hZxA1clljA/segments/93_172.mp4",
        "video_split_scene/_hZxA1clljA/segments/173_399.mp4",
    )
    # The table's paths name the authors' tree; the clips sit flat in the folder.
    assert resolve_pair_path(REAL_CLIPS, rows[0].input) == REAL_CLIPS / "93_172.mp4"
    assert resolve_pair_path(REAL_CLIPS, "elsewhere/none.mp4") is None


def test_bad_pairs_tables_list_every_row_by_its_line(tmp_path) -> None:
    path = tmp_path / "pairs.tsv"
    # a blank line (skipped) before the bad rows: they are on lines 4 and 5 of the file
    path.write_text("video1_path\tvideo2_path\na.mp4\tb.mp4\n\n\tc.mp4\nd.mp4\t\n")
    with pytest.raises(AnnotationError) as caught:
        load_pairs(path)
    assert str(caught.value).splitlines() == [
        f"{path}: line 4: video1_path: must be a path",
        f"{path}: line 5: video2_path: must be a path",
    ]
    path.write_text("input\ttarget\na.mp4\tb.mp4\n")
    with pytest.raises(AnnotationError, match="header: missing column video1_path"):
        load_pairs(path)
    # the same words as for a JSON annotation file
    with pytest.raises(AnnotationError) as caught:
        load_pairs(tmp_path / "missing.tsv")
    assert str(caught.value) == f"{tmp_path / 'missing.tsv'}: annotation file not found"
    with pytest.raises(AnnotationError, match="is a directory, not an annotation file"):
        load_pairs(tmp_path)


def test_videos_are_found_by_id_anywhere_under_the_folder(tmp_path) -> None:
    (tmp_path / "training" / "113").mkdir(parents=True)
    (tmp_path / "training" / "113" / "GLd3aX16zBg.mp4").write_bytes(b"")
    (tmp_path / "QOlSCBRmfWY.mkv").write_bytes(b"")
    (tmp_path / "notes.txt").write_bytes(b"")
    index = video_index(tmp_path)
    assert find_video(index, "GLd3aX16zBg") == tmp_path / "training" / "113" / "GLd3aX16zBg.mp4"
    assert find_video(index, "v_QOlSCBRmfWY") == tmp_path / "QOlSCBRmfWY.mkv"  # ActivityNet
    assert find_video(index, "notes") is None


@needs_real_clips
def test_one_probe_gives_the_duration_and_the_rate_read_video_uses() -> None:
    from vans.data.probe import probe_video, video_duration
    from vans.data.video import read_video

    clip = REAL_CLIPS / "93_172.mp4"
    duration, rate = probe_video(clip)
    assert duration == video_duration(clip) and rate == read_video(clip, end=0.5).fps
