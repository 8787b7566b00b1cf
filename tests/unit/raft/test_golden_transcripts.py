"""Golden scenario transcripts (tests/data/raft/*.txt), one test per file; see transcript_runner for
the format and the commands. `DSCORE_REWRITE_GOLDEN=1` rewrites the expected outputs in place instead of
comparing them: review the diff before keeping it.

The meta-tests below check the runner itself: a wrong expectation fails with a diff naming the file and
line, an unknown command is a clear error, and rewriting produces a file that then passes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from transcript_runner import TranscriptError, TranscriptMismatch, parse, run_transcript

TRANSCRIPTS = Path(__file__).resolve().parents[2] / "data" / "raft"
FILES = sorted(TRANSCRIPTS.glob("*.txt"))
REWRITE = os.environ.get("DSCORE_REWRITE_GOLDEN") == "1"


def test_there_are_transcripts() -> None:
    assert len(FILES) >= 9


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_transcript(path: Path) -> None:
    run_transcript(path, rewrite=REWRITE)


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_transcript_opens_with_a_header_citing_a_section(path: Path) -> None:
    header = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    assert len(header) >= 2, f"{path.name} has no header comment"
    assert any("section" in line.lower() or "§" in line for line in header), f"{path.name} cites no section"


SMALL = """\
# a three-node election
cluster n=3 pre_vote=false check_quorum=false
----
voters n1 n2 n3 seed=0
election=10 heartbeat=1 pre_vote=false check_quorum=false

campaign n1
----
n1 campaigns: candidate at term 1

deliver type=VoteRequest,VoteResponse
----
n1->n2 VoteRequest term=1 last=0@0
  n2 term 0 -> 1
  n2 voted for n1
n1->n3 VoteRequest term=1 last=0@0
  n3 term 0 -> 1
  n3 voted for n1
n2->n1 VoteResponse term=1 granted
  n1 became leader at term 1
n3->n1 VoteResponse term=1 granted
"""


def test_the_runner_passes_a_correct_transcript(tmp_path: Path) -> None:
    path = tmp_path / "small.txt"
    path.write_text(SMALL)
    run_transcript(path)


def test_a_wrong_expectation_fails_with_a_diff_naming_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "wrong.txt"
    path.write_text(SMALL.replace("  n1 became leader at term 1", "  n2 became leader at term 1"))
    with pytest.raises(TranscriptMismatch) as raised:
        run_transcript(path)
    message = str(raised.value)
    assert f"{path}:11: deliver type=VoteRequest,VoteResponse" in message
    assert "-  n2 became leader at term 1" in message
    assert "+  n1 became leader at term 1" in message
    assert "1 block(s)" in message


def test_a_missing_output_line_is_a_mismatch_too(tmp_path: Path) -> None:
    path = tmp_path / "short.txt"
    path.write_text(SMALL.replace("n3->n1 VoteResponse term=1 granted\n", ""))
    with pytest.raises(TranscriptMismatch, match=r"\+n3->n1 VoteResponse term=1 granted"):
        run_transcript(path)


def test_an_unknown_command_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "unknown.txt"
    path.write_text(SMALL + "\nelect n1\n----\nok\n")
    with pytest.raises(
        TranscriptError, match=r"unknown\.txt:23: elect n1: unknown command 'elect' \(known: "
    ):
        run_transcript(path)


@pytest.mark.parametrize(
    ("command", "error"),
    [
        ("campaign n7", "unknown node 'n7'"),
        ("tick n1 many", "tick count must be an integer"),
        ("deliver colour=red", "unknown argument"),
        ("propose n1", "usage: propose"),
    ],
)
def test_bad_arguments_are_clear_errors(tmp_path: Path, command: str, error: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(SMALL + f"\n{command}\n----\nok\n")
    with pytest.raises(TranscriptError, match=error):
        run_transcript(path)


def test_a_command_without_a_separator_is_a_clear_error() -> None:
    with pytest.raises(TranscriptError, match=r"x\.txt:2: expected a '----' line"):
        parse("# c\nstatus\nok\n", "x.txt")


def test_rewrite_fills_in_the_outputs_and_keeps_comments(tmp_path: Path) -> None:
    path = tmp_path / "rewrite.txt"
    # keep comments, commands and separators; every expected output becomes a wrong one-liner
    blocks = SMALL.rstrip("\n").split("\n\n")
    stripped = "\n\n".join(block.split("----")[0] + "----\nstale" for block in blocks) + "\n"
    path.write_text(stripped)
    with pytest.raises(TranscriptMismatch):
        run_transcript(path)
    run_transcript(path, rewrite=True)
    assert path.read_text() == SMALL
    run_transcript(path)
