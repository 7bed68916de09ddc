"""The connection's own frame reader (FrameReader) over a real socket pair: frames as RFC 6455 lays them out (built
with websocket-client's ABNF, unmasked as a server sends them), cut anywhere between reads."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import websocket
from websocket import ABNF, WebSocketProtocolException

from tickpipe.ingestor.connection import FrameReader

pytestmark = pytest.mark.unit


def frame(data: bytes | str, opcode: int = ABNF.OPCODE_TEXT, *, fin: int = 1, mask: bool = False) -> bytes:
    payload = data.encode() if isinstance(data, str) else data
    built = ABNF(fin, 0, 0, 0, opcode, 1 if mask else 0, payload)
    if mask:
        built.get_mask_key = lambda n: b"\x01\x02\x03\x04"  # type: ignore[method-assign,assignment]
    return built.format()


@pytest.fixture
def pair() -> Iterator[tuple[websocket.WebSocket, socket.socket]]:
    """A websocket-client WebSocket on one end (as after its handshake), the exchange's socket on the other."""
    ours, theirs = socket.socketpair()
    ws = websocket.WebSocket(skip_utf8_validation=True, enable_multithread=True)
    ours.settimeout(10)  # a reader waiting for bytes that never come fails the test instead of hanging it
    ws.sock, ws.connected = ours, True
    yield ws, theirs
    ours.close()
    theirs.close()


def read_all(reader: FrameReader, wanted: int) -> list[str]:
    messages: list[str] = []
    while len(messages) < wanted:
        messages.extend(reader.read())
    return messages


def client_frame(sock: socket.socket) -> tuple[int, bytes]:
    """One (masked) frame the client sent: its opcode and unmasked payload."""
    head = sock.recv(2)
    length = head[1] & 0x7F
    key = sock.recv(4)
    data = sock.recv(length) if length else b""
    return head[0] & 0x0F, bytes(b ^ key[i % 4] for i, b in enumerate(data))


def test_frames_cut_anywhere_between_reads_give_the_same_messages(
    pair: tuple[websocket.WebSocket, socket.socket],
) -> None:
    ws, exchange = pair
    reader = FrameReader(ws)
    for cut, texts in [
        *((cut, ["a", "é" * 100, '{"stream":"btcusdt@ticker"}']) for cut in (1, 2, 3, 7, 126, 1000)),
        *((cut, ["a", "x" * 70_000, "b"]) for cut in (1000, 65536, 80_000)),  # a 64-bit length, in pieces
    ]:
        wire = b"".join(frame(text) for text in texts)
        got: list[str] = []
        for start in range(0, len(wire), cut):
            exchange.sendall(wire[start : start + cut])
            got.extend(reader.read())  # a read returns what has arrived: part of a frame, or several
        got.extend(read_all(reader, len(texts) - len(got)))
        assert got == texts, cut


def test_fragments_are_joined_and_a_ping_between_them_answered(pair: tuple[websocket.WebSocket, socket.socket]) -> None:
    ws, exchange = pair
    exchange.sendall(
        frame("hel", fin=0)
        + frame(b"pp", ABNF.OPCODE_PING)
        + frame("lo", ABNF.OPCODE_CONT)
        + frame(b"", ABNF.OPCODE_PONG)
        + frame(b"\x00\x01", ABNF.OPCODE_BINARY, fin=0)
        + frame(b"\x02", ABNF.OPCODE_CONT, fin=0)
        + frame(b"\x03", ABNF.OPCODE_CONT)
        + frame("masked", mask=True)
    )
    assert read_all(FrameReader(ws), 3) == ["hello", "\x00\x01\x02\x03", "masked"]
    assert client_frame(exchange) == (ABNF.OPCODE_PONG, b"pp")


def test_a_close_is_answered_and_the_end_of_the_connection_raised(
    pair: tuple[websocket.WebSocket, socket.socket],
) -> None:
    ws, exchange = pair
    reader = FrameReader(ws)
    exchange.sendall(frame("last") + frame(b"\x03\xe8", ABNF.OPCODE_CLOSE))
    assert read_all(reader, 1) == ["last"]
    assert client_frame(exchange)[0] == ABNF.OPCODE_CLOSE
    exchange.shutdown(socket.SHUT_WR)
    with pytest.raises(websocket.WebSocketConnectionClosedException):
        while True:
            reader.read()


def test_invalid_utf8_is_replaced_not_fatal(pair: tuple[websocket.WebSocket, socket.socket]) -> None:
    ws, exchange = pair
    exchange.sendall(frame(b'{"a":"\xff"}'))
    assert read_all(FrameReader(ws), 1) == ['{"a":"\ufffd"}']


@pytest.mark.parametrize(
    ("wire", "error"),
    [
        (frame("x", ABNF.OPCODE_CONT), "Illegal frame"),
        (frame("a", fin=0) + frame("b"), "Illegal frame"),
        (bytes([0xC1, 0x01]) + b"x", "rsv"),
        (bytes([0x83, 0x00]), "Invalid opcode"),
        (frame(b"p" * 126, ABNF.OPCODE_PING), "too long"),
        (frame(b"p", ABNF.OPCODE_PING, fin=0), "Invalid ping"),
        (bytes([0x81, 0x7F]) + (2**40).to_bytes(8, "big"), "more than"),
    ],
)
def test_protocol_errors_end_the_read(pair: tuple[websocket.WebSocket, socket.socket], wire: bytes, error: str) -> None:
    ws, exchange = pair
    exchange.sendall(wire)
    reader = FrameReader(ws)
    with pytest.raises(WebSocketProtocolException, match=error):
        while True:
            reader.read()
