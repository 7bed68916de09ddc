package dev.tickpipe.flink;

import java.io.IOException;
import java.time.DateTimeException;
import java.time.LocalDateTime;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.regex.Pattern;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonParser;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonProcessingException;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.json.JsonReadFeature;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonToken;
import org.apache.flink.table.annotation.DataTypeHint;
import org.apache.flink.table.annotation.FunctionHint;
import org.apache.flink.table.functions.TableFunction;
import org.apache.flink.types.Row;

/**
 * PARSE_TICK(payload): the wire JSON of a tick to exactly one row (symbol, ts, price, volume, source, reason).
 *
 * <p>A valid tick has {@code reason} NULL; anything else has the other fields NULL and the reason the dead-letter
 * record carries. The rules and reasons are those of {@code tickpipe.schema.parse_tick}, the Python parser the
 * ingestor and the {@code keyed} engine use (tests/ma_job/test_parse_tick.py runs both on the same payloads); only
 * the quoted value after a reason's colon may be written differently (Jackson's number text, not Python's repr).
 *
 * <p>A table function rather than a scalar one returning ROW: the planner may evaluate a scalar function once per
 * field it reads; a LATERAL TABLE call parses each record exactly once.
 */
@FunctionHint(output = @DataTypeHint("ROW<symbol STRING, ts TIMESTAMP(3), price DOUBLE, volume DOUBLE, source STRING, "
        + "reason STRING, rejected_raw STRING, raw_length INT>"))
public class ParseTick extends TableFunction<Row> {

    private static final Set<String> NOT_FINITE = Set.of("nan", "inf", "infinity");
    private static final String[] FIELDS = {"symbol", "timestamp", "price", "volume", "source"};
    /** The symbol rules of tickpipe.schema.SYMBOL_RULES, per source: the same patterns (ASCII, either case), the same
     *  maximum lengths, the same stored case (upper: true). */
    private static final class SymbolRule {
        final Pattern pattern;
        final int maxLength;
        final boolean upper;

        SymbolRule(String pattern, int maxLength, boolean upper) {
            this.pattern = Pattern.compile(pattern);
            this.maxLength = maxLength;
            this.upper = upper;
        }

        boolean matches(String text) {
            return text.length() <= maxLength && pattern.matcher(text).matches();
        }

        String stored(String text) {
            return upper ? text.toUpperCase(Locale.ROOT) : text.toLowerCase(Locale.ROOT);
        }
    }

    private static final Map<String, SymbolRule> SYMBOL_RULES = Map.of(
            "binance", new SymbolRule("[A-Za-z0-9]{2,20}", 20, true),
            "coingecko", new SymbolRule("[A-Za-z0-9][A-Za-z0-9-]{0,99}/[A-Za-z]{2,10}", 111, false),
            "yahoo", new SymbolRule("\\^?[A-Za-z0-9]+(?:[.=-][A-Za-z0-9]+)*", 20, true));
    // The limits of tickpipe.schema (MAX_REASON_LENGTH, MAX_EVENT_TIME_MS, the timestamp form): same verdicts.
    private static final int MAX_REASON_LENGTH = 200;
    private static final int MAX_NESTING = 500;
    private static final int MAX_NUMBER_LENGTH = 1000;
    private static final int MAX_RAW_LENGTH = 65_536;
    private static final long MAX_EVENT_TIME_MS = 253_402_300_799_999L; // 9999-12-31T23:59:59.999Z
    private static final Pattern TIMESTAMP = Pattern.compile(
            "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\\.[0-9]{1,9})?)?(?:Z|[+-][0-9]{2}:[0-9]{2})");
    // NaN and Infinity are numbers to Python's json.loads too: they are then rejected as "not finite".
    private static final JsonFactory JSON =
            JsonFactory.builder().enable(JsonReadFeature.ALLOW_NON_NUMERIC_NUMBERS).build();

    /** One field's value as JSON gave it: a string, a number (as text, to parse it like Python's float()), or
     *  anything else (true, null, an object...) rendered for the reason text. */
    private static final class Value {
        final JsonToken token;
        final String text;

        Value(JsonToken token, String text) {
            this.token = token;
            this.text = text;
        }

        boolean isString() {
            return token == JsonToken.VALUE_STRING;
        }

        boolean isNumber() {
            return token == JsonToken.VALUE_NUMBER_INT || token == JsonToken.VALUE_NUMBER_FLOAT;
        }

        /** As Python's repr() shows it in tickpipe.schema's reasons. */
        String repr() {
            return isString() ? "'" + text + "'" : text;
        }
    }

    /** The reason a record is not a tick. */
    private static final class Invalid extends Exception {
        Invalid(String reason) {
            super(oneLine(reason), null, false, false); // no stack trace: this is a verdict, not an error
        }
    }

    /** As tickpipe.schema.one_line: control characters as spaces, at most MAX_REASON_LENGTH characters. */
    static String oneLine(String reason) {
        StringBuilder text = new StringBuilder(Math.min(reason.length(), MAX_REASON_LENGTH + 1));
        boolean control = false;
        for (int i = 0; i < reason.length() && text.length() <= MAX_REASON_LENGTH; i++) {
            char c = reason.charAt(i);
            boolean isControl = c < 0x20 || c == 0x7f;
            if (!isControl) {
                text.append(c);
            } else if (!control) {
                text.append(' ');
            }
            control = isControl;
        }
        if (text.length() > MAX_REASON_LENGTH) {
            text.setLength(MAX_REASON_LENGTH - 1);
            text.append('…');
        }
        return text.toString();
    }

    /**
     * The payload as a rejected record's dead letter keeps it: at most MAX_RAW_LENGTH characters (tickpipe.schema),
     * never cut inside a surrogate pair. Done here, on a Java string, because Flink's own string functions
     * (SUBSTRING, CHAR_LENGTH) walk the raw format's bytes as UTF-8 and fail on a record that is not.
     */
    static String deadLetterRaw(String payload) {
        if (payload == null || payload.length() <= MAX_RAW_LENGTH) {
            return payload;
        }
        int end = Character.isHighSurrogate(payload.charAt(MAX_RAW_LENGTH - 1)) ? MAX_RAW_LENGTH - 1 : MAX_RAW_LENGTH;
        return payload.substring(0, end);
    }

    public void eval(String payload) {
        try {
            collect(parse(payload));
        } catch (Invalid invalid) {
            int length = payload == null ? 0 : payload.length();
            collect(Row.of(null, null, null, null, null, invalid.getMessage(), deadLetterRaw(payload), length));
        }
    }

    static Row parse(String payload) throws Invalid {
        if (payload == null) {
            throw new Invalid("not JSON: empty record");
        }
        Value[] values = new Value[FIELDS.length];
        try (JsonParser parser = JSON.createParser(payload)) {
            JsonToken root = parser.nextToken();
            if (root == null) {
                throw new Invalid("not JSON: no value");
            }
            if (root != JsonToken.START_OBJECT) {
                skip(parser, 1);
                readToEnd(parser);
                throw new Invalid("not a JSON object");
            }
            for (JsonToken token = parser.nextToken(); token == JsonToken.FIELD_NAME; token = parser.nextToken()) {
                int field = fieldIndex(parser.currentName());
                JsonToken value = parser.nextToken();
                if (value == JsonToken.START_OBJECT || value == JsonToken.START_ARRAY) {
                    skip(parser, 2);
                    if (field >= 0) {
                        values[field] = new Value(value, value == JsonToken.START_OBJECT ? "{...}" : "[...]");
                    }
                } else {
                    checkNumber(parser, value);
                    if (field >= 0) {
                        values[field] = new Value(value, render(parser, value));
                    }
                }
            }
            readToEnd(parser);
        } catch (JsonProcessingException error) {
            throw new Invalid("not JSON: " + error.getOriginalMessage());
        } catch (IOException error) {
            throw new Invalid("not JSON: " + error.getMessage());
        }
        List<String> missing = new ArrayList<>();
        for (int i = 0; i < FIELDS.length; i++) {
            if (values[i] == null) {
                missing.add(FIELDS[i]);
            }
        }
        if (!missing.isEmpty()) {
            throw new Invalid("missing fields: " + String.join(", ", missing));
        }
        Value symbol = values[0];
        Value timestamp = values[1];
        long eventTimeMs = eventTime(timestamp);
        // As tickpipe.schema.validate_tick: the symbol by its source's rule first, an unknown source last.
        SymbolRule rule = values[4].isString() ? SYMBOL_RULES.get(values[4].text) : null;
        if (rule != null && (!symbol.isString() || !rule.matches(symbol.text))) {
            throw new Invalid("invalid symbol: " + symbol.repr());
        }
        double price = number("price", values[2]);
        double volume = number("volume", values[3]);
        if (!(price > 0)) {
            throw new Invalid("price must be positive, got " + values[2].repr());
        }
        if (volume < 0) {
            throw new Invalid("volume must not be negative, got " + values[3].repr());
        }
        if (eventTimeMs <= 0 || eventTimeMs > MAX_EVENT_TIME_MS) {
            throw new Invalid("invalid event time: " + eventTimeMs);
        }
        if (rule == null) {
            throw new Invalid("unknown source: " + values[4].repr() + " (expected binance, coingecko, yahoo)");
        }
        LocalDateTime ts = LocalDateTime.ofEpochSecond(
                Math.floorDiv(eventTimeMs, 1000), (int) Math.floorMod(eventTimeMs, 1000) * 1_000_000, ZoneOffset.UTC);
        return Row.of(rule.stored(symbol.text), ts, price, volume, values[4].text, null, null, null);
    }

    /**
     * Past the value the parser is at (a container at nesting {@code depth}, the root object being 1, or a scalar),
     * with the limits of tickpipe.schema: nesting up to MAX_NESTING, numbers up to MAX_NUMBER_LENGTH characters.
     */
    private static void skip(JsonParser parser, int depth) throws IOException, Invalid {
        int open = 0;
        JsonToken token = parser.currentToken();
        while (true) {
            if (token == JsonToken.START_OBJECT || token == JsonToken.START_ARRAY) {
                if (depth + open > MAX_NESTING) {
                    throw new Invalid("not JSON: nested too deeply");
                }
                open++;
            } else if (token == JsonToken.END_OBJECT || token == JsonToken.END_ARRAY) {
                open--;
            } else if (token == null) {
                throw new Invalid("not JSON: unexpected end");
            } else {
                checkNumber(parser, token);
            }
            if (open <= 0) {
                return;
            }
            token = parser.nextToken();
        }
    }

    private static void checkNumber(JsonParser parser, JsonToken token) throws IOException, Invalid {
        boolean number = token == JsonToken.VALUE_NUMBER_INT || token == JsonToken.VALUE_NUMBER_FLOAT;
        if (number && parser.getTextLength() > MAX_NUMBER_LENGTH) {
            throw new Invalid("not JSON: number longer than " + MAX_NUMBER_LENGTH + " characters");
        }
    }

    private static int fieldIndex(String name) {
        for (int i = 0; i < FIELDS.length; i++) {
            if (FIELDS[i].equals(name)) {
                return i;
            }
        }
        return -1;
    }

    private static String render(JsonParser parser, JsonToken token) throws IOException {
        switch (token) {
            case VALUE_TRUE:
                return "True";
            case VALUE_FALSE:
                return "False";
            case VALUE_NULL:
                return "None";
            default:
                return parser.getText();
        }
    }

    /** After the root value only whitespace may follow ("{} {}" or "{}x" is not JSON, as for json.loads). */
    private static void readToEnd(JsonParser parser) throws IOException, Invalid {
        if (parser.nextToken() != null) {
            throw new Invalid("not JSON: Extra data");
        }
    }

    /** A JSON number, or a string holding one (Binance sends prices as strings), finite. */
    private static double number(String name, Value value) throws Invalid {
        if (!value.isNumber() && !value.isString()) {
            throw new Invalid(name + " is not a number: " + value.repr());
        }
        String text = value.text.trim(); // controls and space, as tickpipe.schema strips them
        String unsigned = text.startsWith("-") || text.startsWith("+") ? text.substring(1) : text;
        if (NOT_FINITE.contains(unsigned.toLowerCase(Locale.ROOT))) {
            throw new Invalid(name + " is not finite: " + value.repr());
        }
        double number;
        try {
            // Double.parseDouble also takes Java literals Python's float() refuses ("1f", "0x1p3"): not here.
            if (!isDecimal(unsigned)) {
                throw new NumberFormatException(text);
            }
            number = Double.parseDouble(text);
        } catch (NumberFormatException error) {
            throw new Invalid(name + " is not a number: " + value.repr());
        }
        if (Double.isNaN(number) || Double.isInfinite(number)) {
            throw new Invalid(name + " is not finite: " + value.repr());
        }
        return number;
    }

    private static boolean isDecimal(String text) {
        if (text.isEmpty()) {
            return false;
        }
        for (int i = 0; i < text.length(); i++) {
            char c = text.charAt(i);
            if (!(c >= '0' && c <= '9') && c != '.' && c != 'e' && c != 'E' && c != '+' && c != '-') {
                return false;
            }
        }
        return true;
    }

    /** ISO-8601 with a zone (`Z` or an offset) to epoch milliseconds; the ingestor's own form is parsed by hand. */
    private static long eventTime(Value timestamp) throws Invalid {
        if (timestamp.isString()) {
            String text = timestamp.text;
            try {
                if (isCanonical(text)) {
                    LocalDateTime moment = LocalDateTime.of(
                            digits(text, 0, 4), digits(text, 5, 7), digits(text, 8, 10),
                            digits(text, 11, 13), digits(text, 14, 16), digits(text, 17, 19), digits(text, 20, 23) * 1_000_000);
                    return moment.toEpochSecond(ZoneOffset.UTC) * 1000 + digits(text, 20, 23);
                }
                if (TIMESTAMP.matcher(text).matches()) {
                    OffsetDateTime moment =
                            OffsetDateTime.parse(text.replace("Z", "+00:00"), DateTimeFormatter.ISO_OFFSET_DATE_TIME);
                    int year = moment.withOffsetSameInstant(ZoneOffset.UTC).getYear();
                    if (year >= 1 && year <= 9999) { // what Python's datetime holds
                        return moment.toEpochSecond() * 1000 + Math.round(moment.getNano() / 1e6);
                    }
                }
            } catch (DateTimeException error) {
                // falls through to the reason below
            }
        }
        throw new Invalid("invalid timestamp: " + timestamp.repr());
    }

    /** `yyyy-MM-ddTHH:mm:ss.SSSZ`, what tickpipe.schema.format_timestamp writes. */
    private static boolean isCanonical(String text) {
        if (text.length() != 24 || text.charAt(23) != 'Z') {
            return false;
        }
        for (int i = 0; i < 23; i++) {
            char c = text.charAt(i);
            boolean ok = switch (i) {
                case 4, 7 -> c == '-';
                case 10 -> c == 'T';
                case 13, 16 -> c == ':';
                case 19 -> c == '.';
                default -> c >= '0' && c <= '9';
            };
            if (!ok) {
                return false;
            }
        }
        return true;
    }

    private static int digits(String text, int from, int to) {
        int value = 0;
        for (int i = from; i < to; i++) {
            value = value * 10 + (text.charAt(i) - '0');
        }
        return value;
    }
}
