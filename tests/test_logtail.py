"""Following a log file: appends, partial lines, oversize lines, rotation, truncation, re-creation.

Real files in tmp_path, changed the way logrotate and a Node.js logger change them; no waiting.
"""

from __future__ import annotations

import os
from pathlib import Path

from checks.logfile.tail import Follower


def lines(n: int, start: int = 0, tag: str = "l") -> bytes:
    return b"".join(f"{tag}{i}\n".encode() for i in range(start, start + n))


def read_all(f: Follower, max_bytes: int = 1 << 18) -> bytes:
    out = []
    for _ in range(10_000):
        chunk = f.read(max_bytes)
        out.append(chunk)
        if not chunk and not f.more:
            break
    return b"".join(out)


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as fh:
        fh.write(data)


def test_from_end_skips_what_is_there_and_reads_what_is_appended(tmp_path: Path) -> None:
    log = tmp_path / "combined.log"
    log.write_bytes(lines(5))
    f = Follower(str(log), from_end=True)
    assert read_all(f) == b""
    assert f.up
    append(log, lines(3, 5))
    assert read_all(f) == lines(3, 5)
    assert read_all(f) == b""


def test_from_start_reads_everything(tmp_path: Path) -> None:
    log = tmp_path / "combined.log"
    log.write_bytes(lines(1000))
    f = Follower(str(log), from_end=False)
    assert read_all(f, max_bytes=1000) == lines(1000)


def test_from_end_in_the_middle_of_a_line_skips_its_rest(tmp_path: Path) -> None:
    """Started while the logger was writing a line: its second half is not a line."""
    log = tmp_path / "combined.log"
    log.write_bytes(b'old\n{"half":')
    f = Follower(str(log), from_end=True)
    assert read_all(f) == b""
    append(log, b"1}\nnext\n")
    assert read_all(f) == b"next\n"


def test_partial_line_waits_for_its_newline(tmp_path: Path) -> None:
    log = tmp_path / "combined.log"
    log.write_bytes(b"")
    f = Follower(str(log), from_end=False)
    append(log, b'{"level":"info","mess')
    assert read_all(f) == b""
    append(log, b'age":"x"}\n{"lev')
    assert read_all(f) == b'{"level":"info","message":"x"}\n'
    append(log, b'el":"error"}\n')
    assert read_all(f) == b'{"level":"error"}\n'


def test_byte_limit_returns_whole_lines_and_says_there_is_more(tmp_path: Path) -> None:
    """A slice is max_bytes, or a longest line and its newline if that is more."""
    log = tmp_path / "combined.log"
    log.write_bytes(lines(10_000))
    f = Follower(str(log), from_end=False, max_line_bytes=256)
    first = f.read(4096)
    assert f.more and first.endswith(b"\n") and len(first) <= 4096
    assert first + read_all(f, 4096) == lines(10_000)


def test_oversize_lines_are_dropped_whole_and_counted(tmp_path: Path) -> None:
    log = tmp_path / "combined.log"
    long = b"x" * 5000
    log.write_bytes(b"a\n" + long + b"\nb\n" + b"y" * 1024 + b"\nc\n")
    f = Follower(str(log), from_end=False, max_line_bytes=1024)
    assert read_all(f) == b"a\nb\n" + b"y" * 1024 + b"\nc\n"  # exactly the limit is allowed
    assert f.oversize == 1


def test_oversize_line_across_many_reads_is_dropped(tmp_path: Path) -> None:
    """A 1 MiB line written in pieces, read in small slices: never buffered whole."""
    log = tmp_path / "combined.log"
    log.write_bytes(b"a\n")
    f = Follower(str(log), from_end=False, max_line_bytes=1000)
    assert read_all(f, 512) == b"a\n"
    for _ in range(64):
        append(log, b"z" * 16384)
        assert read_all(f, 512) == b""  # nothing of it is kept: the follower holds no buffer
    append(log, b"\nb\n")
    assert read_all(f, 512) == b"b\n"
    assert f.oversize == 1


def test_rename_rotation_reads_old_file_to_its_end_then_the_new_one(tmp_path: Path) -> None:
    """logrotate `create`: the logger still writes to the renamed file until it reopens."""
    log = tmp_path / "combined.log"
    log.write_bytes(lines(3))
    f = Follower(str(log), from_end=False)
    assert read_all(f) == lines(3)
    with open(log, "ab") as writer:  # the BFF's open descriptor
        writer.write(lines(2, 3))
        os.rename(log, tmp_path / "combined.log.1")
        writer.write(lines(2, 5))  # written after the rename, to the old file
        writer.flush()
        log.write_bytes(lines(4, 0, tag="new"))
        assert read_all(f) == lines(4, 3) + lines(4, 0, tag="new")
    assert f.rotations == 1
    append(log, b"more\n")
    assert read_all(f) == b"more\n"


def test_rotation_keeps_an_unterminated_last_line(tmp_path: Path) -> None:
    log = tmp_path / "combined.log"
    log.write_bytes(b"a\nlast-without-newline")
    f = Follower(str(log), from_end=False)
    assert read_all(f) == b"a\n"
    os.rename(log, tmp_path / "combined.log.1")
    log.write_bytes(b"b\n")
    assert read_all(f) == b"last-without-newline\nb\n"


def test_copytruncate_starts_again_from_zero(tmp_path: Path) -> None:
    log = tmp_path / "combined.log"
    log.write_bytes(lines(100))
    f = Follower(str(log), from_end=False)
    assert read_all(f) == lines(100)
    with open(log, "r+b") as fh:  # copytruncate: same inode, emptied in place
        fh.truncate(0)
    append(log, lines(3, tag="after"))
    assert read_all(f) == lines(3, tag="after")
    assert f.truncations == 1 and f.rotations == 0


def test_delete_and_recreate(tmp_path: Path) -> None:
    log = tmp_path / "combined.log"
    log.write_bytes(lines(2))
    f = Follower(str(log), from_end=False)
    assert read_all(f) == lines(2)
    log.unlink()
    assert read_all(f) == b""
    assert not f.up
    assert read_all(f) == b""  # still missing: no error, still down
    log.write_bytes(lines(2, tag="again"))
    assert read_all(f) == lines(2, tag="again")  # a new file is read from its start
    assert f.up


def test_missing_at_start_then_appearing_is_read_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "error.log"
    f = Follower(str(log), from_end=True)
    assert read_all(f) == b""
    assert not f.up
    log.write_bytes(lines(3))
    assert read_all(f) == lines(3)  # appeared after we started: all of it is new
    assert f.up


def test_a_directory_at_the_path_is_down_not_an_error(tmp_path: Path) -> None:
    d = tmp_path / "combined.log"
    d.mkdir()
    f = Follower(str(d), from_end=False)
    assert read_all(f) == b""
    assert not f.up


def test_unread_bytes_is_the_backlog(tmp_path: Path) -> None:
    log = tmp_path / "combined.log"
    log.write_bytes(lines(1000))
    f = Follower(str(log), from_end=False, max_line_bytes=256)
    first = f.read(1000)
    assert 900 < len(first) <= 1000
    assert f.unread_bytes == len(lines(1000)) - len(first)
    read_all(f)
    assert f.unread_bytes == 0


def test_partial_line_right_after_an_oversize_line(tmp_path: Path) -> None:
    log = tmp_path / "combined.log"
    log.write_bytes(b"a\n" + b"x" * 5000 + b"\n" + b'{"lev')
    f = Follower(str(log), from_end=False, max_line_bytes=1024)
    assert read_all(f, 2048) == b"a\n"
    append(log, b'el":"info"}\n')
    assert read_all(f, 2048) == b'{"level":"info"}\n'
    assert f.oversize == 1


def test_rotated_file_with_an_oversize_unterminated_tail(tmp_path: Path) -> None:
    log = tmp_path / "combined.log"
    log.write_bytes(b"a\n" + b"x" * 900)
    f = Follower(str(log), from_end=False, max_line_bytes=512)
    assert read_all(f) == b"a\n"
    os.rename(log, tmp_path / "combined.log.1")
    log.write_bytes(b"b\n")
    assert read_all(f) == b"b\n"
    assert f.oversize == 1
