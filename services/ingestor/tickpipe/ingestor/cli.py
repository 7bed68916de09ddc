"""`tickpipe ingest`: exchange WebSocket → Kafka until SIGTERM/SIGINT, then flush and exit 0."""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType

from tickpipe.config import Settings, load_settings
from tickpipe.errors import CommandError, ConfigError
from tickpipe.ingestor.service import Ingestor
from tickpipe.logs import get_logger
from tickpipe.metrics import MetricsServer

log = get_logger("tickpipe.ingestor")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--symbols",
        help="comma-separated symbols of SOURCE, e.g. btcusdt,ethusdt or all-usdt (binance: every USDT pair trading), "
        "bitcoin/usd (coingecko), AAPL,BTC-USD,^GSPC (yahoo) (default: SYMBOLS)",
    )
    parser.add_argument(
        "--flush-timeout", type=float, default=30.0, help="seconds to deliver queued ticks on shutdown (default 30)"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    symbols = settings.symbols
    if args.symbols:
        try:
            symbols = load_settings(symbols=args.symbols).symbols
        except ConfigError as error:
            raise CommandError(str(error).replace("SYMBOLS", "--symbols")) from None
    ingestor = Ingestor(settings, symbols)
    server = MetricsServer(settings.metrics_port, live=ingestor.live, ready=ingestor.ready).start()
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, request_stop)
    ingestor.start()
    exchange = {"coingecko": settings.coingecko_url, "yahoo": settings.yahoo_ws_url}.get(
        settings.source, settings.binance_ws_url
    )
    log.info(
        "ingestor_started",
        source=settings.source,
        symbols="all-usdt (discovering)" if ingestor.discovery is not None else len(symbols),
        connections=len(ingestor.feeds),
        exchange=exchange,
        topic=settings.kafka_topic,
        candles_topic=settings.kafka_candles_topic if ingestor.repairer is not None else None,
        repair_from=settings.binance_rest_url if ingestor.repairer is not None else None,
        metrics_port=server.port,
    )
    stop.wait()
    log.info("ingestor_stopping")
    undelivered = ingestor.stop(args.flush_timeout)
    server.stop()
    on_disk = ingestor.sink.on_disk
    if undelivered:
        log.error(
            "ingestor_stopped",
            ticks_sent=ingestor.router.sent,
            undelivered=undelivered,
            spill_bytes=on_disk,
            hint="Kafka unreachable: these ticks were not delivered",
        )
        return 1
    log.info(
        "ingestor_stopped",
        ticks_sent=ingestor.router.sent,
        undelivered=0,
        spill_bytes=on_disk,
        **({"hint": "Kafka unreachable: the disk buffer is produced at the next start"} if on_disk else {}),
    )
    return 0
