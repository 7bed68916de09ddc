-- When a series is late: each source's limit, and the hours its markets keep (Grafana's tickpipe-no-ticks fires per
-- series from stale_series(now()); a stock is not late on a Saturday).

-- How long a series of the source may go without a tick while its market is open: Binance's tickers update every
-- second; CoinGecko's Demo plan is polled about every 5 minutes (tickpipe.ingestor.coingecko.poll_interval); Yahoo's
-- quiet symbols can go minutes without a trade.
ALTER TABLE tick_sources ADD COLUMN stale_after_seconds integer NOT NULL DEFAULT 120 CHECK (stale_after_seconds > 0);
UPDATE tick_sources SET stale_after_seconds = 900 WHERE source = 'coingecko';
UPDATE tick_sources SET stale_after_seconds = 600 WHERE source = 'yahoo';

-- Whether the market of a series trades at `at`. Crypto never closes (Binance, CoinGecko, Yahoo's `BTC-USD`-style
-- pairs). On Yahoo: currencies (`EURUSD=X`) and futures (`ES=F`) trade from Sunday 17:00 to Friday 17:00 New York
-- time; stocks and indices (`AAPL`, `^GSPC`, `0700.HK` alike, as the US market) in New York's regular session,
-- Monday to Friday 09:30-16:00. Exchange holidays are not known here: on one, a stock's series shows as late.
CREATE FUNCTION market_open(source text, symbol text, at timestamptz) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN source <> 'yahoo' OR symbol ~ '-(USD|USDT|EUR|GBP|JPY|BTC|ETH)$' THEN true
        WHEN symbol ~ '=[XF]$' THEN NOT (
            (extract(isodow FROM at AT TIME ZONE 'America/New_York') = 5
                AND (at AT TIME ZONE 'America/New_York')::time >= '17:00')
            OR extract(isodow FROM at AT TIME ZONE 'America/New_York') = 6
            OR (extract(isodow FROM at AT TIME ZONE 'America/New_York') = 7
                AND (at AT TIME ZONE 'America/New_York')::time < '17:00'))
        ELSE extract(isodow FROM at AT TIME ZONE 'America/New_York') BETWEEN 1 AND 5
            AND (at AT TIME ZONE 'America/New_York')::time BETWEEN '09:30' AND '16:00'
    END
$$;

-- The series (with a tick in the last week: a weekend and a holiday are shorter) that are late at `at`: no tick for longer than their source's limit,
-- while their market is open and has been for at least that long (no alert in the first minutes after an open,
-- before the first trade). seconds_late is how far past the limit.
CREATE FUNCTION stale_series(at timestamptz)
RETURNS TABLE (source text, symbol text, seconds_late double precision)
LANGUAGE sql STABLE AS $$
    SELECT p.source, p.symbol, extract(epoch FROM at - max(p.time))::float8 - s.stale_after_seconds
    FROM price_ticks p JOIN tick_sources s ON s.source = p.source
    WHERE p.time > at - interval '7 days' AND p.time <= at
    GROUP BY p.source, p.symbol, s.stale_after_seconds
    HAVING max(p.time) < at - make_interval(secs => s.stale_after_seconds)
        AND market_open(p.source, p.symbol, at)
        AND market_open(p.source, p.symbol, at - make_interval(secs => s.stale_after_seconds))
$$;
