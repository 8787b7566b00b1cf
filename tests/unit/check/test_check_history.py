"""Reading, pairing, writing and recording histories."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from dscore.check import (
    EdnSyntaxError,
    History,
    HistoryError,
    HistoryRecorder,
    Keyword,
    Op,
    OpType,
    check_history,
    pair_operations,
    parse_edn_history,
    read_edn_history,
)

GOOD_LINE = "{:process 0, :type :invoke, :f :write, :value 1}"


def test_reads_ops_with_positions_lines_and_extra_keys_ignored() -> None:
    history = read_edn_history(
        "{:process 0, :type :invoke, :f :write, :value 1, :time 10, :index 99}\n"
        "\n"
        '{:process :nemesis, :type :info, :f :start, :value "partition"}\n'
        '{:process 0, :type :ok, :f :write, :value 1, :error "ignored"}\n'
    )
    assert [op.index for op in history] == [0, 1, 2]
    assert [op.line for op in history] == [1, 3, 4]
    assert history.ops[0] == Op(0, OpType.INVOKE, "write", None, 1, 0)
    assert history.ops[1].process == "nemesis"
    assert history.ops[1].is_nemesis


def test_pairs_completions_with_the_latest_invocation_of_their_process() -> None:
    history = read_edn_history(
        "{:process 0, :type :invoke, :f :write, :value 1}\n"
        "{:process 1, :type :invoke, :f :read, :value nil}\n"
        "{:process :nemesis, :type :info, :f :kill, :value nil}\n"
        "{:process 0, :type :ok, :f :write, :value 1}\n"
        "{:process 0, :type :invoke, :f :write, :value 2}\n"
        "{:process 0, :type :info, :f :write, :value 2}\n"
        "{:process 1, :type :fail, :f :read, :value nil}\n"
        "{:process 2, :type :invoke, :f :read, :value nil}\n"
    )
    operations = history.operations()
    assert [(op.process, op.call, op.ret, op.outcome) for op in operations] == [
        (0, 0, 3, OpType.OK),
        (1, 1, 6, OpType.FAIL),
        (0, 4, 5, OpType.INFO),
        (2, 7, None, OpType.INFO),  # never completed: indeterminate
    ]
    assert operations[3].completion is None


def test_the_knossos_vector_form_is_accepted() -> None:
    history = read_edn_history("[\n" + GOOD_LINE + "\n{:process 0, :type :ok, :f :write, :value 1}\n]")
    assert [op.line for op in history] == [2, 3]


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        (GOOD_LINE + "\n{:process 0 :type :ok", 2, "unterminated"),
        (GOOD_LINE + '\n{:process 0, :type :ok, :f :write, :value "abc}\n', 2, "unterminated string"),
        (GOOD_LINE + "\n" + GOOD_LINE.replace(":invoke", ":bogus"), 2, ":type"),
        (GOOD_LINE + "\n\n{:type :invoke, :f :read}", 3, ":process"),
        (GOOD_LINE + "\n{:process 1.5, :type :invoke, :f :read}", 2, ":process"),
        ("{:process 1, :type :invoke, :value 3}", 1, ":f"),
        (GOOD_LINE + "\n[1 2]", 2, "expected an operation map"),
        (GOOD_LINE + "\n42", 2, "expected an operation map"),
        ("{:process 0, :type :ok, :f :write, :value 1}", 1, "no pending invocation"),
        (GOOD_LINE + "\n" + GOOD_LINE, 2, "still pending"),
        (GOOD_LINE + "\n{:process 0, :type :ok, :f :read, :value 1}", 2, "does not match"),
        (GOOD_LINE + "\n{:process 0, :type :ok, :f :write, :value 1}}", 2, "unexpected '}'"),
        ('\n\n\n{:process 0, :type :invoke, :f :write, :value "\\x"}', 4, "escape"),
    ],
)
def test_malformed_lines_are_reported_with_their_line_number(text: str, line: int, fragment: str) -> None:
    with pytest.raises(HistoryError) as caught:
        read_edn_history(text)
    assert caught.value.line == line
    assert fragment in str(caught.value)
    assert f"line {line}" in str(caught.value)


def test_syntax_errors_are_a_subclass() -> None:
    with pytest.raises(EdnSyntaxError):
        read_edn_history("{:process 0")


def test_errors_from_a_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.edn"
    path.write_text(GOOD_LINE + "\n{:process 9, :type :ok, :f :write, :value 1}\n")
    with pytest.raises(HistoryError) as caught:
        read_edn_history(path)
    assert caught.value.source == str(path)
    assert caught.value.line == 2
    assert str(caught.value).startswith(f"{path}: line 2: ")
    with pytest.raises(HistoryError, match="cannot read history"):
        read_edn_history(tmp_path / "missing.edn")
    with pytest.raises(HistoryError, match="cannot read history"):
        read_edn_history(str(tmp_path / "missing.edn"))


def test_reads_files_given_as_str_or_path(tmp_path: Path) -> None:
    path = tmp_path / "ok.edn"
    path.write_text(GOOD_LINE + "\n")
    assert read_edn_history(str(path)) == read_edn_history(path) == read_edn_history(GOOD_LINE + "\n")
    assert len(read_edn_history("")) == 0


def test_history_indexes_ops_by_position() -> None:
    history = History((Op(0, OpType.INVOKE, "read"), Op(0, OpType.OK, "read", value=1)))
    assert [op.index for op in history] == [0, 1]
    assert len(history) == 2


def test_pairing_errors_of_python_built_histories_name_the_index() -> None:
    history = History((Op(0, OpType.INVOKE, "read"), Op(1, OpType.OK, "read")))
    with pytest.raises(HistoryError) as caught:
        pair_operations(history.ops)
    assert caught.value.index == 1
    assert caught.value.line is None
    assert "op index 1" in str(caught.value)


def test_to_edn_round_trips() -> None:
    history = History(
        (
            Op(0, OpType.INVOKE, "write", value=3),
            Op("worker", OpType.INVOKE, "cas", key="k", value=(1, 2)),
            Op("nemesis", OpType.INFO, "start", value={Keyword("nodes"): ("n1", "n2")}),
            Op(0, OpType.OK, "write", value=3),
            Op("worker", OpType.FAIL, "cas", key="k", value=(1, 2)),
            Op(1, OpType.INVOKE, "append", key=7, value='quote " and \\ and\nnewline'),
            Op(1, OpType.INFO, "append", key=7, value='quote " and \\ and\nnewline'),
        )
    )
    text = history.to_edn()
    assert text.splitlines()[0] == "{:process 0, :type :invoke, :f :write, :value 3, :index 0}"
    assert text.count("\n") == len(history)
    again = read_edn_history(text)
    assert again == history
    assert again.to_edn() == text


def test_recorder_records_and_pairs() -> None:
    recorder = HistoryRecorder()
    write = recorder.invoke(0, "write", value=1)
    read = recorder.invoke(1, "read")
    assert recorder.pending == (write, read)
    recorder.ok(write)
    completion = recorder.ok(read, 1)
    assert completion == Op(1, OpType.OK, "read", None, 1, 3)
    cas = recorder.invoke(0, "cas", value=(1, 2))
    recorder.fail(cas)
    lost = recorder.invoke(2, "write", value=9)
    recorder.info(lost)
    recorder.record(Op("nemesis", OpType.INFO, "heal"))
    assert recorder.pending == ()
    history = recorder.history()
    assert len(recorder) == len(history) == 9
    assert [op.type for op in history] == [
        OpType.INVOKE,
        OpType.INVOKE,
        OpType.OK,
        OpType.OK,
        OpType.INVOKE,
        OpType.FAIL,
        OpType.INVOKE,
        OpType.INFO,
        OpType.INFO,
    ]
    assert history.ops[2].value == 1  # a completion without a value repeats the invocation's
    assert read_edn_history(recorder.to_edn()) == history
    assert check_history(history).is_linearizable


def test_recorder_records_keys() -> None:
    recorder = HistoryRecorder()
    recorder.ok(recorder.invoke(0, "put", key="k", value="v"))
    recorder.ok(recorder.invoke(0, "get", key="k"), "v")
    history = recorder.history()
    assert [op.key for op in history] == ["k"] * 4
    assert ':key "k"' in recorder.to_edn()
    assert check_history(history, "kv").is_linearizable


def test_recorder_rejects_misuse() -> None:
    recorder = HistoryRecorder()
    op_id = recorder.invoke(0, "read")
    with pytest.raises(HistoryError, match="pending"):
        recorder.invoke(0, "write", value=1)
    recorder.ok(op_id, None)
    with pytest.raises(HistoryError, match="not a pending invocation"):
        recorder.ok(op_id)
    with pytest.raises(HistoryError, match="not a pending invocation"):
        recorder.info(42)
    with pytest.raises(HistoryError, match="no pending invocation"):
        recorder.record(Op(5, OpType.OK, "read"))
    recorder.record(Op(5, OpType.INVOKE, "read"))
    with pytest.raises(HistoryError, match="does not match"):
        recorder.record(Op(5, OpType.OK, "write"))
    with pytest.raises(HistoryError, match="already has"):
        recorder.record(Op(5, OpType.INVOKE, "read"))


def test_recorder_is_safe_across_threads() -> None:
    recorder = HistoryRecorder()

    def client(process: int) -> None:
        for value in range(200):
            recorder.ok(recorder.invoke(process, "write", value=value))

    threads = [threading.Thread(target=client, args=(process,)) for process in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    history = recorder.history()
    assert len(history) == 4 * 200 * 2
    assert len(history.operations()) == 800


def test_parse_edn_history_attributes_errors_to_a_source() -> None:
    with pytest.raises(HistoryError) as caught:
        parse_edn_history("{:process 0, :type :ok, :f :read}", source="<stdin>")
    assert str(caught.value).startswith("<stdin>: line 1: ")
