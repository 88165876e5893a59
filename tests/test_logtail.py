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
    assert f.rotations == {"rename": 1}
    append(log, b"more\n")
    assert read_all(f) == b"more\n"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_rotation_keeps_an_unterminated_last_line_once_the_old_file_is_let_go(tmp_path: Path) -> None:
    """The logger may still finish that line (it writes until it reopens): the old file is
    let go only after `retire_s` without growing, and its last line is then still a line."""
    log = tmp_path / "combined.log"
    log.write_bytes(b"a\nlast-without-newline")
    clock = Clock()
    f = Follower(str(log), from_end=False, retire_s=5.0, clock=clock)
    assert read_all(f) == b"a\n"
    os.rename(log, tmp_path / "combined.log.1")
    log.write_bytes(b"b\n")
    assert read_all(f) == b"b\n"
    clock.t += 4.9
    assert read_all(f) == b""
    clock.t += 0.2
    assert read_all(f) == b"last-without-newline\n"
    assert read_all(f) == b""


def test_sighup_reopen_the_old_file_is_read_until_the_logger_lets_it_go(tmp_path: Path) -> None:
    """logrotate `create` + SIGHUP: the new file fills while the logger, until its reopen,
    still writes to the renamed one. Every line of both is read, none twice."""
    log = tmp_path / "combined.log"
    log.write_bytes(lines(3))
    clock = Clock()
    f = Follower(str(log), from_end=False, clock=clock)
    assert read_all(f) == lines(3)
    with open(log, "ab") as writer:
        os.rename(log, tmp_path / "combined.log.1")
        log.write_bytes(lines(2, tag="new"))
        assert read_all(f) == lines(2, tag="new")
        writer.write(lines(4, 3))  # before the reopen
        writer.flush()
        clock.t += 3
        assert read_all(f) == lines(4, 3)
        clock.t += 3  # 3 s since it last grew: still kept
        append(log, lines(1, 2, tag="new"))
        writer.write(lines(1, 7))
        writer.flush()
        assert read_all(f) == lines(1, 7) + lines(1, 2, tag="new")
    clock.t += 5.1
    assert read_all(f) == b""
    assert f.rotations == {"rename": 1} and f.lost_bytes == 0
    assert len(f._old) == 0  # let go


def test_copytruncate_starts_again_from_zero(tmp_path: Path) -> None:
    log = tmp_path / "combined.log"
    log.write_bytes(lines(100))
    f = Follower(str(log), from_end=False)
    assert read_all(f) == lines(100)
    with open(log, "r+b") as fh:  # copytruncate: same inode, emptied in place
        fh.truncate(0)
    append(log, lines(3, tag="after"))
    assert read_all(f) == lines(3, tag="after")
    assert f.rotations == {"truncate": 1} and f.lost_bytes == 0


def copytruncate(log: Path, copy: Path, *, between: bytes = b"") -> None:
    """As logrotate does it: copy the file, then truncate it in place (whatever the logger
    writes in between is in neither file)."""
    copy.write_bytes(log.read_bytes())
    if between:
        append(log, between)
    with open(log, "r+b") as fh:
        fh.truncate(0)


def test_copytruncate_reads_the_copy_from_our_offset_first(tmp_path: Path) -> None:
    """Lines written before the copy but not read yet are in the copy: read them there,
    then the truncated file from its start. What came between copy and truncate is lost."""
    log = tmp_path / "combined.log"
    log.write_bytes(lines(100))
    f = Follower(str(log), from_end=False)
    assert read_all(f) == lines(100)
    append(log, lines(20, 100))  # not read before the rotation
    (tmp_path / "combined.log.2").write_bytes(lines(100, tag="older"))  # an older rotation: not it
    assert f.read(1 << 20) == lines(20, 100)
    append(log, lines(7, 120))
    copytruncate(log, tmp_path / "combined.log.1", between=lines(3, 127))
    append(log, lines(5, tag="after"))
    assert read_all(f) == lines(7, 120) + lines(5, tag="after")
    assert f.rotations == {"copytruncate": 1}
    assert f.lost_bytes == 0  # we never saw the 3 lines: they are not known to be lost


def test_copytruncate_counts_bytes_seen_past_the_copy_as_lost(tmp_path: Path) -> None:
    """Read in slices, we saw the file longer than the copy logrotate made: what lay past
    the copy's end and past our offset was destroyed by the truncation."""
    log = tmp_path / "combined.log"
    log.write_bytes(lines(10))
    f = Follower(str(log), from_end=False, max_line_bytes=256)
    assert read_all(f) == lines(10)
    (tmp_path / "combined.log.1").write_bytes(log.read_bytes())  # the copy
    after_copy = lines(300, 10)
    append(log, after_copy)
    first = f.read(1024)  # one slice: we saw the whole size
    assert f.more and after_copy.startswith(first)
    with open(log, "r+b") as fh:
        fh.truncate(0)
    assert read_all(f) == b""
    assert f.rotations == {"copytruncate": 1}
    assert f.lost_bytes == len(after_copy) - len(first)


def test_a_file_truncated_and_grown_back_past_our_offset_is_seen_by_its_first_bytes(tmp_path: Path) -> None:
    """copytruncate, then more written than we had read before we looked again: the size
    alone cannot tell; the first bytes can. Reading starts again at the new file's start,
    never in the middle of a line."""
    log = tmp_path / "combined.log"
    log.write_bytes(lines(10, tag="first"))
    f = Follower(str(log), from_end=False)
    assert read_all(f) == lines(10, tag="first")
    append(log, lines(2, 10, tag="first"))
    copytruncate(log, tmp_path / "combined.log.1")
    grown = lines(40, tag="second-generation")
    append(log, grown)
    assert len(grown) > len(lines(12, tag="first"))
    assert read_all(f) == lines(2, 10, tag="first") + grown
    assert f.rotations == {"copytruncate": 1} and f.lost_bytes == 0


def test_dateext_copy_is_found_and_a_compressed_one_is_lost(tmp_path: Path) -> None:
    log = tmp_path / "combined.log"
    log.write_bytes(lines(10))
    f = Follower(str(log), from_end=False, max_line_bytes=256)
    assert read_all(f) == lines(10)
    append(log, lines(2, 10))
    copytruncate(log, tmp_path / "combined.log-20261207")
    assert read_all(f) == lines(2, 10)
    assert f.rotations == {"copytruncate": 1}
    append(log, lines(4, tag="b"))
    assert read_all(f) == lines(4, tag="b")
    append(log, lines(2, 4, tag="b") + lines(100, tag="c"))
    first = f.read(300)
    assert f.more
    (tmp_path / "combined.log-20261208.gz").write_bytes(b"\x1f\x8b compressed")  # compress, no delaycompress
    with open(log, "r+b") as fh:
        fh.truncate(0)
    assert read_all(f) == b""
    assert f.rotations == {"copytruncate": 1, "truncate": 1}
    assert f.lost_bytes == len(lines(2, 4, tag="b") + lines(100, tag="c")) - len(first)


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
    f.retire_s = 0.0
    assert read_all(f) == b""
    assert f.oversize == 1
