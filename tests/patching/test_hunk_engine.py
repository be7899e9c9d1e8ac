"""Hunks matched exactly, line endings included, and found at offsets only where exactly one place
fits (airflow_ext/patching/hunk_engine.py), through apply, check and revert."""

from __future__ import annotations

import pytest

from airflow_ext import patching
from airflow_ext.errors import PatchError
from tests.patching.synthetic import (
    ALPHA,
    ALPHA_PATCHED,
    PATCH_1,
    PATCH_2,
    VERSION,
    Env,
    lines,
    one_file_env,
    set_old_mtimes,
)


@pytest.mark.parametrize(
    "bad_patch, expected",
    [
        # Context made against different content: value_19 is not 190 in the released file.
        (
            PATCH_2.replace(" value_19 = 19\n", " value_19 = 190\n"),
            ("hunk #1", "fakepkg/alpha.py", "line 20"),
        ),
        # Context found nowhere, not even at an offset: value_18 = 180 occurs in no line.
        (
            PATCH_2.replace(" value_18 = 18\n", " value_18 = 180\n"),
            ("hunk #1", "fakepkg/alpha.py", "line 19", "at no other line"),
        ),
        # Missing "\ No newline" marker: "BETA = 1\n" is not what the file ends with.
        (
            PATCH_2.replace("-BETA = 1\n\\ No newline at end of file\n", "-BETA = 1\n"),
            ("hunk #1", "fakepkg/beta.py", "line 4"),
        ),
    ],
    ids=["context-differs", "context-nowhere", "newline-at-eof"],
)
def test_mismatching_hunk_is_refused_and_nothing_written(tmp_path, bad_patch, expected):
    env = Env(
        tmp_path,
        patches={"0001-alpha-two-hunks.patch": PATCH_1, "0002-beta-and-alpha-tail.patch": bad_patch},
    )
    set_old_mtimes(env)
    before = env.snapshot()
    with pytest.raises(PatchError) as err:
        patching.apply_series(**env.kw())
    message = str(err.value)
    assert "0002-beta-and-alpha-tail.patch" in message and VERSION in message
    for fragment in expected:
        assert fragment in message
    assert "nothing changed" in message
    # Patch 0001 applied cleanly in the dry run, but nothing at all was written.
    assert env.snapshot() == before


def test_second_hunk_mismatch_names_hunk_2(tmp_path):
    bad = PATCH_1.replace("-value_16 = 16\n", "-value_16 = 61\n")
    env = Env(
        tmp_path, patches={"0001-alpha-two-hunks.patch": bad, "0002-beta-and-alpha-tail.patch": PATCH_2}
    )
    before = env.snapshot()
    with pytest.raises(
        PatchError, match=r"0001-alpha-two-hunks\.patch.*hunk #2 for fakepkg/alpha\.py.*line 16"
    ):
        patching.apply_series(**env.kw())
    assert env.snapshot() == before


def test_patch_adding_the_missing_final_newline(tmp_path):
    patch_text = lines(
        "---",
        "--- a/fakepkg/alpha.py",
        "+++ b/fakepkg/alpha.py",
        "@@ -1,2 +1,3 @@",
        " first",
        "-last",
        "\\ No newline at end of file",
        "+last",
        "+appended",
    )
    env = one_file_env(tmp_path, b"first\nlast", patch_text)
    patching.apply_series(**env.kw())
    assert env.read("fakepkg/alpha.py") == b"first\nlast\nappended\n"
    patching.check_series(**env.kw())
    patching.revert_series(**env.kw())
    assert env.read("fakepkg/alpha.py") == b"first\nlast"


def test_crlf_line_endings_preserved(tmp_path):
    patch_text = (
        "Description: CRLF file\n"
        "---\n"
        "--- a/fakepkg/alpha.py\n"
        "+++ b/fakepkg/alpha.py\n"
        "@@ -1,2 +1,3 @@\n"
        " one\r\n"
        "+inserted\r\n"
        " two\r\n"
    )
    original = b"one\r\ntwo\r\nthree\r\n"
    env = one_file_env(tmp_path, original, patch_text)
    patching.apply_series(**env.kw())
    assert env.read("fakepkg/alpha.py") == b"one\r\ninserted\r\ntwo\r\nthree\r\n"
    patching.revert_series(**env.kw())
    assert env.read("fakepkg/alpha.py") == original


def test_lf_patch_does_not_apply_to_crlf_file(tmp_path):
    patch_text = lines(
        "---",
        "--- a/fakepkg/alpha.py",
        "+++ b/fakepkg/alpha.py",
        "@@ -1,2 +1,3 @@",
        " one",
        "+inserted",
        " two",
    )
    env = one_file_env(tmp_path, b"one\r\ntwo\r\n", patch_text)
    with pytest.raises(PatchError, match="hunk #1 for fakepkg/alpha.py fails at line 1"):
        patching.apply_series(**env.kw())
    assert env.read("fakepkg/alpha.py") == b"one\r\ntwo\r\n"


# What a neighbouring patch release changes in lines the patches do not touch: two lines more
# before alpha's first hunk, one less between its two hunks.
ALPHA_SHIFTED = b"# two lines the series never saw\nimport os\n" + ALPHA.replace(b"value_10 = 10\n", b"")


def test_hunks_found_at_an_offset_apply_check_and_revert_byte_for_byte(tmp_path):
    env = one_file_env(tmp_path, ALPHA_SHIFTED, PATCH_1)
    set_old_mtimes(env)
    untouched = env.read("fakepkg/beta.py")

    message = patching.apply_series(**env.kw())

    assert message.startswith(f"apache-airflow {VERSION}: applied 1 patch ")
    expected = b"# two lines the series never saw\nimport os\n" + ALPHA_PATCHED.replace(
        b"value_10 = 10\n", b""
    ).replace(b'TAIL = "added by 0002"\n', b"")
    assert env.read("fakepkg/alpha.py") == expected
    assert "applied and intact" in patching.check_series(**env.kw())
    patching.revert_series(**env.kw())
    assert env.read("fakepkg/alpha.py") == ALPHA_SHIFTED
    assert env.read("fakepkg/beta.py") == untouched


def _two_blocks(first: str, second: str) -> bytes:
    """A file with a repeated block: ``start``/``<first>``/``end``, blank, ``start``/``<second>``/``end``."""
    return lines("start", first, "end", "", "start", second, "end").encode()


def _retarget_patch(at: int) -> str:
    """Changes ``middle`` to ``changed`` in a start/middle/end block; its header says line *at*."""
    return lines(
        "---",
        "--- a/fakepkg/alpha.py",
        "+++ b/fakepkg/alpha.py",
        f"@@ -{at},3 +{at},3 @@",
        " start",
        "-middle",
        "+changed",
        " end",
    )


def test_hunk_at_its_stated_line_wins_over_the_same_content_elsewhere(tmp_path):
    env = one_file_env(tmp_path, _two_blocks("middle", "middle"), _retarget_patch(5))
    patching.apply_series(**env.kw())
    assert env.read("fakepkg/alpha.py") == _two_blocks("middle", "changed")
    patching.revert_series(**env.kw())
    assert env.read("fakepkg/alpha.py") == _two_blocks("middle", "middle")


def test_hunk_whose_content_occurs_twice_elsewhere_is_refused_and_nothing_written(tmp_path):
    # Two lines in front: neither block is where the header (line 1) says.
    original = b"\n\n" + _two_blocks("middle", "middle")
    env = one_file_env(tmp_path, original, _retarget_patch(1))
    set_old_mtimes(env)
    before = env.snapshot()
    with pytest.raises(PatchError) as err:
        patching.apply_series(**env.kw())
    message = str(err.value)
    assert "hunk #1 for fakepkg/alpha.py fails at line 1" in message
    assert "lines 3 and 7" in message and message.endswith("nothing changed")
    assert env.snapshot() == before


def test_hunk_found_once_away_from_its_line_is_applied_there(tmp_path):
    # The same two lines in front, but only the second block still says "middle".
    env = one_file_env(tmp_path, b"\n\n" + _two_blocks("other", "middle"), _retarget_patch(1))
    patching.apply_series(**env.kw())
    assert env.read("fakepkg/alpha.py") == b"\n\n" + _two_blocks("other", "changed")


def test_next_hunk_is_looked_for_first_at_the_offset_of_the_one_before(tmp_path):
    # Hunk 2's block occurs at its stated line 9 and, two lines further, at 11: the file has two
    # extra lines in front, so hunk 1 is found at offset +2, and hunk 2 belongs at 11, not at 9.
    original = lines(
        "x", "y", "head", "a", "tail", "", "", "", "", "", "start", "middle", "end", "start", "middle", "end"
    ).encode()
    patch_text = lines(
        "---",
        "--- a/fakepkg/alpha.py",
        "+++ b/fakepkg/alpha.py",
        "@@ -1,3 +1,3 @@",
        " head",
        "-a",
        "+b",
        " tail",
        "@@ -9,3 +9,3 @@",
        " start",
        "-middle",
        "+changed",
        " end",
    )
    env = one_file_env(tmp_path, original, patch_text)
    patching.apply_series(**env.kw())
    expected = original.replace(b"\na\n", b"\nb\n").replace(b"middle\nend\nstart", b"changed\nend\nstart", 1)
    assert env.read("fakepkg/alpha.py") == expected
    patching.revert_series(**env.kw())
    assert env.read("fakepkg/alpha.py") == original


def test_hunk_is_not_looked_for_before_the_previous_one(tmp_path):
    # Hunk 2's content occurs only above hunk 1: applying it there would reorder the patch.
    original = lines("start", "middle", "end", "head", "a", "tail", "x", "y", "z").encode()
    patch_text = lines(
        "---",
        "--- a/fakepkg/alpha.py",
        "+++ b/fakepkg/alpha.py",
        "@@ -4,3 +4,3 @@",
        " head",
        "-a",
        "+b",
        " tail",
        "@@ -7,3 +7,3 @@",
        " start",
        "-middle",
        "+changed",
        " end",
    )
    env = one_file_env(tmp_path, original, patch_text)
    with pytest.raises(PatchError, match=r"hunk #2 for fakepkg/alpha\.py.*at no other line"):
        patching.apply_series(**env.kw())
    assert env.read("fakepkg/alpha.py") == original
