"""`tickpipe sim [--exchange binance|coingecko|yahoo]`: run a simulated market-data service until interrupted.

Prints one line when listening: `READY ws://host:port http://host:port` for Binance (its WebSocket streams and its
REST API), `READY http://host:port/api/v3` for CoinGecko, `READY ws://host:port/?version=2` for Yahoo's streamer.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from tickpipe.config import ALL_USDT, DEFAULT_SYMBOLS, Settings
from tickpipe.sim.coingecko import CoinGeckoOptions, CoinGeckoSim
from tickpipe.sim.server import SimExchange, SimOptions
from tickpipe.sim.yahoo import YahooOptions, YahooSim

ALL_USDT_SIM_SYMBOLS = 595  # with the 5 defaults 600 pairs: several hundred, as Binance lists in USDT


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--exchange",
        choices=["binance", "coingecko", "yahoo"],
        default="binance",
        help="which service to simulate (default binance)",
    )
    parser.add_argument("--port", type=int, default=9443, help="listen port; 0 picks a free one (default 9443)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--symbols", help="comma-separated symbols (default: SYMBOLS)")
    parser.add_argument("--symbol-count", type=int, help="instead of --symbols: SYM0000USDT, SYM0001USDT, ...")
    parser.add_argument("--seed", type=int, default=42, help="random-walk seed (same seed, same prices)")
    parser.add_argument("--rate", type=float, default=1.0, help="updates per second per symbol (default 1)")
    parser.add_argument("--ping-interval", type=float, default=20.0, help="seconds between server pings")
    parser.add_argument("--ping-timeout", type=float, default=60.0, help="drop a client silent this long")
    parser.add_argument("--connection-lifetime", type=float, help="close every connection after S seconds")
    parser.add_argument("--shutdown-notice", type=float, help="send serverShutdown S seconds before that close")
    parser.add_argument("--malformed-every", type=int, default=0, help="a malformed frame after every N events")
    parser.add_argument("--max-ticks", type=int, help="stop publishing after N events")
    parser.add_argument("--record", type=Path, help="append every event sent to a client to this JSON-lines file")
    parser.add_argument(
        "--clock-speed", type=float, default=1.0, help="run the exchange's clock N times as fast (candle tests)"
    )
    parser.add_argument(
        "--rest-weight-limit", type=int, default=6000, help="REST request weight per minute before 429 (Binance: 6000)"
    )
    parser.add_argument("--demo-key", help="coingecko: require this Demo API key (x-cg-demo-api-key)")
    parser.add_argument("--calls-per-minute", type=int, default=100, help="coingecko: rate limit (Demo: 100)")
    parser.add_argument(
        "--refresh-seconds", type=float, default=60.0, help="coingecko: how often prices change (free tiers: ~60)"
    )
    parser.add_argument("--market-closed", action="store_true", help="yahoo: stocks quiet, crypto still trading")
    parser.add_argument(
        "--refuse-status",
        type=int,
        choices=[403, 451],
        help="answer every connection with this HTTP status, as Binance does from a restricted region (451)",
    )


def symbols_from(args: argparse.Namespace, settings: Settings) -> list[str]:
    if args.symbol_count:
        return [f"SYM{i:04d}USDT" for i in range(args.symbol_count)]
    named = [s.strip() for s in args.symbols.split(",") if s.strip()] if args.symbols else list(settings.symbols)
    if [s.lower() for s in named] == [ALL_USDT]:  # an ingestor that discovers its symbols: an exchange's worth
        return [s.upper() for s in DEFAULT_SYMBOLS] + [f"SYM{i:04d}USDT" for i in range(ALL_USDT_SIM_SYMBOLS)]
    return [s.upper() for s in named]


class _AsyncService(Protocol):
    async def start(self) -> None: ...
    async def close(self) -> None: ...


async def _serve(service: _AsyncService, addresses: Callable[[], str]) -> None:
    """Run `service` until SIGINT, SIGTERM or SIGHUP (a closed terminal stops it like Ctrl-C)."""
    await service.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {addresses()}", flush=True)
    await stop.wait()
    await service.close()


def _serve_coingecko(options: CoinGeckoOptions) -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: stop.set())
    with CoinGeckoSim(options) as sim:  # serves on its own thread
        print(f"READY {sim.url}", flush=True)
        stop.wait()


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.exchange == "coingecko":
        ids = tuple(s.strip() for s in args.symbols.split(",")) if args.symbols else CoinGeckoOptions().ids
        _serve_coingecko(
            CoinGeckoOptions(
                ids=ids,
                seed=args.seed,
                refresh_seconds=args.refresh_seconds,
                calls_per_minute=args.calls_per_minute,
                demo_key=args.demo_key,
                host=args.host,
                port=args.port,
            )
        )
        return 0
    if args.exchange == "yahoo":
        yahoo = YahooSim(
            YahooOptions(args.rate, args.seed, not args.market_closed, args.malformed_every, args.host, args.port)
        )
        asyncio.run(_serve(yahoo, lambda: yahoo.url))
        return 0
    options = SimOptions(
        symbols=symbols_from(args, settings),
        seed=args.seed,
        rate=args.rate,
        host=args.host,
        port=args.port,
        ping_interval=args.ping_interval,
        ping_timeout=args.ping_timeout,
        connection_lifetime=args.connection_lifetime,
        shutdown_notice=args.shutdown_notice,
        malformed_every=args.malformed_every,
        max_ticks=args.max_ticks,
        record=args.record,
        refuse_status=args.refuse_status,
        clock_speed=args.clock_speed,
        rest_weight_limit=args.rest_weight_limit,
    )
    exchange = SimExchange(options)
    asyncio.run(_serve(exchange, lambda: f"{exchange.url} {exchange.rest_url}"))
    return 0
