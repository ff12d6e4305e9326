"""Exception -> one-line reason, written once for every table, manifest and note."""

from pocketml.errors import REASON_CHARS, PocketMLError, one_line, reason_of


def test_reason_is_the_type_and_the_first_line_cut_to_one_length():
    assert reason_of(ValueError("bad shape\n  traceback detail")) == "ValueError: bad shape"
    assert reason_of(KeyError()) == "KeyError"
    assert len(reason_of(RuntimeError("x" * 1000))) == REASON_CHARS


def test_a_user_error_keeps_its_own_words():
    assert reason_of(PocketMLError("tflite int8 needs calibration images")) == "tflite int8 needs calibration images"


def test_one_line_of_a_child_process_stderr_is_its_last_line():
    stderr = "Traceback (most recent call last):\n  File x\nFileNotFoundError: m.tflite\n\n"
    assert one_line(stderr, "no output", last=True) == "FileNotFoundError: m.tflite"
    assert one_line("", "no output", last=True) == "no output"
