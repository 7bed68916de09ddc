"""A feed: one set of streams kept flowing over a sequence of connections.

Unplanned ends (dropped, stale, refused) reconnect with backoff inside the attempt budget. Planned ends (the
connection's age nears the exchange's 24 h cut, or a `serverShutdown` notice) rotate: the new connection opens
first and the old one closes only once the new one delivers, so no update falls between them; the overlap's
duplicates are dropped downstream by event time.

Connections come from a factory (`connect`, default Connection): the policy (staleness, rotation, backoff) is
tested in-process in milliseconds against an in-memory exchange. Whether a feed is connected is the gauge
tickpipe_ingest_exchange_connected{feed}; a handshake refused for good (HTTP 451 restricted region, 403) is logged
as one `exchange_refused` error line naming the fix.

A feed made with a stream set (`streams=`) can change it while it runs (`change`, for symbol discovery): the live
connection is sent SUBSCRIBE/UNSUBSCRIBE requests ({"method": ..., "params": [streams], "id": n}, answered
{"result": null, "id": n}), paced under the exchange's 5 incoming messages per second per connection, and every
new connection (reconnect, rotation) opens with the feed's current streams in its URL, then is brought up to date
the same way if the set changed while it opened. The other streams of the connection are never interrupted.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import orjson
import websocket

from tickpipe.ingestor import metrics
from tickpipe.ingestor.connection import AttemptBudget, Backoff, Connection, ConnectionFactory, OnText
from tickpipe.logs import get_logger

log = get_logger("tickpipe.ingestor")
# A handshake the exchange answered with one of these will not succeed by retrying: say why, in one line.
# ({url_setting}: the source's URL setting, BINANCE_WS_URL or YAHOO_WS_URL.)
REFUSED = {
    451: "the exchange refuses connections from this location (HTTP 451, restricted region): run the ingestor in a "
    "region the exchange serves, or set {url_setting} to an endpoint that serves this one",
    403: "the exchange refused the connection (HTTP 403 Forbidden): this IP may be blocked or banned (too many "
    "connection attempts, a firewall); check {url_setting} and INGEST_MAX_ATTEMPTS_PER_5MIN",
}

# Binance disconnects a connection that sends more than 5 messages in a second (PING and PONG frames count too).
# One request per 0.3 s is at most 4 in any second: room is left for the pong websocket-client sends on a ping.
CONTROL_SPACING = 0.3
# Binance documents no limit on a request's params; a connection has at most 1024 streams, so a few requests.
PARAMS_PER_REQUEST = 200


def combined_url(base_url: str, streams: Iterable[str]) -> str:
    """The combined-stream URL of `streams` at the exchange's endpoint `base_url`."""
    return f"{base_url}/stream?streams={'/'.join(streams)}"


@dataclass(frozen=True)
class FeedPolicy:
    stale_after: float = 30.0
    rotate_after: float = 86_400.0 - 600.0
    healthy_after: float = 60.0  # a connection that lived this long resets the backoff
    connect_timeout: float = 10.0
    switch_timeout: float = 30.0  # how long a rotation waits for the new connection's first message
    check_interval: float = 0.2  # how often the watchdog looks at the connection


class Feed(threading.Thread):
    def __init__(
        self,
        name: str,
        url: str,
        *,
        on_text: OnText,
        policy: FeedPolicy,
        budget: AttemptBudget,
        stop: threading.Event,
        connect: ConnectionFactory = Connection,
        backoff: Backoff | None = None,
        streams: Sequence[str] | None = None,
        source: str = "binance",
    ) -> None:
        """`url`: the URL every connection opens; with `streams`, the exchange's endpoint (ws://host:port) and each
        connection opens the combined-stream URL of the feed's streams at that moment."""
        super().__init__(name=f"feed-{name}", daemon=True)
        self.feed_name, self.base_url, self.on_text = name, url, on_text
        self._streams: dict[str, None] | None = None if streams is None else dict.fromkeys(streams)
        self._streams_lock = threading.Lock()
        self._control_lock = threading.Lock()  # one sender of requests at a time (discovery, the feed's own thread)
        self._request_ids = itertools.count(1)
        self.policy, self.budget, self.stop_event = policy, budget, stop
        self.connect = connect
        self.current: Connection | None = None
        self.backoff = backoff or Backoff()
        self.connected_once = threading.Event()
        self.last_error: str | None = None
        self._generation = 0
        self.source = source
        self._connected = metrics.EXCHANGE_CONNECTED.labels(source, name)
        self._connected.set(0)

    @property
    def url(self) -> str:
        """The URL the next connection opens."""
        return self._next_url()[0]

    @property
    def streams(self) -> tuple[str, ...]:
        with self._streams_lock:
            return tuple(self._streams or ())

    def change(self, subscribe: Sequence[str] = (), unsubscribe: Sequence[str] = ()) -> None:
        """Add and remove streams while running: the live connection is sent the requests (this call waits for the
        pacing, a second or so per thousand streams); a connection opened later carries the new set in its URL."""
        if self._streams is None:
            raise RuntimeError("this feed has a fixed URL: make it with streams= to change them")
        with self._streams_lock:
            for stream in unsubscribe:
                self._streams.pop(stream, None)
            for stream in subscribe:
                self._streams[stream] = None
        current = self.current
        if current is not None and current.alive:
            self._sync(current)

    def _next_url(self) -> tuple[str, tuple[str, ...] | None]:
        with self._streams_lock:
            streams = None if self._streams is None else tuple(self._streams)
        return (self.base_url if streams is None else combined_url(self.base_url, streams)), streams

    def _sync(self, connection: Connection) -> None:
        """Bring `connection`'s subscriptions to the feed's streams: UNSUBSCRIBE what left, SUBSCRIBE what came,
        paced under the exchange's limit. A failed send ends the attempt: the connection is going, and the next one
        opens with the feed's streams in its URL."""
        if self._streams is None:
            return
        with self._control_lock:
            with self._streams_lock:
                wanted = list(self._streams)
            gone = sorted(connection.streams.difference(wanted))
            new = [stream for stream in wanted if stream not in connection.streams]
            requests = 0
            for method, streams in (("UNSUBSCRIBE", gone), ("SUBSCRIBE", new)):
                for start in range(0, len(streams), PARAMS_PER_REQUEST):
                    chunk = streams[start : start + PARAMS_PER_REQUEST]
                    wait = connection.control_sent_at + CONTROL_SPACING - time.monotonic()
                    if wait > 0 and self.stop_event.wait(wait):
                        return
                    request = {"method": method, "params": chunk, "id": next(self._request_ids)}
                    try:
                        connection.send(orjson.dumps(request).decode())
                    except (websocket.WebSocketException, OSError) as error:
                        log.warning("subscription_failed", feed=self.feed_name, method=method, error=str(error))
                        return
                    connection.control_sent_at = time.monotonic()
                    if method == "SUBSCRIBE":
                        connection.streams.update(chunk)
                    else:
                        connection.streams.difference_update(chunk)
                    metrics.SUBSCRIPTION_REQUESTS.labels(method.lower()).inc()
                    requests += 1
            if requests:
                log.info(
                    "streams_changed",
                    feed=self.feed_name,
                    connection=connection.name,
                    subscribed=len(new),
                    unsubscribed=len(gone),
                    requests=requests,
                    streams=len(connection.streams),
                )

    def run(self) -> None:
        while not self.stop_event.is_set():
            connection = self._connect()
            if connection is None:
                self._pause(self.backoff.next_delay())
                continue
            self.current = connection
            metrics.CONNECTIONS.inc()
            self._connected.set(1)
            self._sync(connection)  # the streams changed while it opened: bring it up to date
            reason = self._serve()
            metrics.CONNECTIONS.dec()
            self._connected.set(0)
            if self.stop_event.is_set():
                break
            lived = self.current.age if self.current else 0.0
            if lived >= self.policy.healthy_after:
                self.backoff.reset()
            metrics.RECONNECTS.labels(reason).inc()
            delay = self.backoff.next_delay()
            log.warning(
                "connection_lost",
                feed=self.feed_name,
                reason=reason,
                lived_s=round(lived, 1),
                retry_in_s=round(delay, 2),
            )
            self._pause(delay)
        if self.current:
            self.current.close()

    def _pause(self, seconds: float) -> None:
        self.stop_event.wait(seconds)

    def _connect(self) -> Connection | None:
        while (wait := self.budget.wait_time()) > 0:
            log.warning("connection_budget_exhausted", feed=self.feed_name, wait_s=round(wait, 1))
            if self.stop_event.wait(min(wait, 5.0)):
                return None
        self._generation += 1
        url, streams = self._next_url()
        connection = self.connect(url, self.on_text, f"{self.feed_name}.{self._generation}")
        connection.streams = set(streams or ())
        try:
            connection.open(self.policy.connect_timeout)
        except Exception as error:  # any failure to connect is retried the same way
            status = getattr(error, "status_code", None)  # websocket-client's WebSocketBadStatusException
            if status in REFUSED:
                self.last_error = REFUSED[status].format(url_setting=f"{self.source.upper()}_WS_URL")
                log.error(
                    "exchange_refused",
                    feed=self.feed_name,
                    status=status,
                    url=self.base_url.split("?")[0],
                    error=self.last_error,
                )
                return None
            self.last_error = f"{type(error).__name__}: {error}"
            log.warning("connect_failed", feed=self.feed_name, url=self.base_url.split("?")[0], error=self.last_error)
            return None
        self.last_error = None
        log.info("connected", feed=self.feed_name, connection=connection.name)
        self.connected_once.set()
        return connection

    def _serve(self) -> str:
        """Watch the current connection until it ends; return why (rotations happen inside)."""
        while not self.stop_event.wait(self.policy.check_interval):
            connection = self.current
            if connection is None:
                return "dropped"
            if not connection.alive:
                log.warning("connection_dropped", feed=self.feed_name, error=connection.error)
                return "dropped"
            if connection.silence > self.policy.stale_after:
                log.warning("connection_stale", feed=self.feed_name, silent_s=round(connection.silence, 1))
                connection.close()
                return "stale"
            if connection.shutdown_notice:
                self._rotate(connection, "server_shutdown")
            elif connection.age > self.policy.rotate_after:
                self._rotate(connection, "age")
        return "stopped"

    def _rotate(self, old: Connection, trigger: str) -> None:
        log.info("rotation_started", feed=self.feed_name, trigger=trigger, old=old.name)
        new = self._connect()
        if new is not None:
            deadline = time.monotonic() + self.policy.switch_timeout
            while new.messages == 0 and new.alive and time.monotonic() < deadline and not self.stop_event.is_set():
                time.sleep(0.01)
            if new.messages > 0:
                old.close()
                self.current = new
                metrics.ROTATIONS.labels(trigger).inc()
                log.info("rotation_done", feed=self.feed_name, trigger=trigger, new=new.name)
                self._sync(new)
                return
            new.close()
        # Keep the old connection (it may still have minutes to live); try again on the next check.
        old.shutdown_notice = trigger == "server_shutdown"
        log.warning("rotation_failed", feed=self.feed_name, trigger=trigger)
        self._pause(self.backoff.next_delay())
