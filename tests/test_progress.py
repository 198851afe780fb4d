# Copyright (C) 2026 fem_ml developers
#
# SPDX-License-Identifier:    MIT
import io

from fem_ml._progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_lines_are_sparse_and_complete():
    stream = io.StringIO()
    bar = Progress(100, "work", stream=stream)
    for k in range(1, 101):
        bar.update(k, "info")
    lines = stream.getvalue().splitlines()
    assert 10 <= len(lines) <= 11
    assert lines[-1].startswith("work [##############################] 100/100") and lines[-1].endswith("info")


def test_terminal_redraws_in_place():
    stream = _Terminal()
    bar = Progress(3, "t", stream=stream)
    for k in range(1, 4):
        bar.update(k)
    text = stream.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n")


def test_disabled_writes_nothing():
    stream = io.StringIO()
    Progress(5, "off", enabled=False, stream=stream).update(5)
    assert stream.getvalue() == ""
