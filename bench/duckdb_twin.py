"""DuckDB twin of ``ingest`` → ``clean`` → ``sessionize`` → ``featurize`` for canonical CSV exports (the scale benchmark's
baseline).

The SQL is written from the same rules as the Spark code and takes its thresholds from the same ``Settings``:

* ingest: the export's lines into a table, verbatim (Latin-1 decoding, so invalid UTF-8 bytes survive to be seen),
  with each line's number in its file (the row order DuckDB keeps on load);
* clean (``shopmine.etl.clean``): field split (RFC 4180 quotes), id / time / number typing, the same 20 checks in the
  same priority order with the same reason codes, exact dedupe (first line per event id) and near dedupe (same user,
  item and type within ``clean.dedupe.near_window_seconds``), quantity imputation, per-category robust outlier flags
  (median ± t·1.4826·MAD, exact medians where Spark uses ``percentile_approx``), the three bot rules;
* sessionize (``shopmine.features.sessions``) and featurize (``shopmine.features.daily`` / ``aggregates``): sessions,
  the per-day tables, then interactions with time-decayed strength, user, item and category features as of the
  last event date.

Every output table is written as Parquet (snappy), as Spark's Delta tables are. Not in the twin: Delta's transaction
log and MERGE bookkeeping, and the Spark ML feature pipeline ``featurize`` fits on the user features (one-hot and
scalers over one row per user); the Spark side's time includes both. Only the canonical format (CSV) is covered.
"""

from __future__ import annotations

import time
from pathlib import Path

EVENT_TYPES = ("view", "search", "favourite", "cart", "remove_from_cart", "purchase", "review")
QUANTITY_TYPES = ("cart", "remove_from_cart", "purchase")
TEXT_TIME_FORMATS = ("%Y/%m/%d %H:%M:%S", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y %H:%M", "%d-%b-%Y %H:%M:%S")
# A string decoded as Latin-1 is valid UTF-8 iff its code points above 0x7F form well-formed UTF-8 sequences.
VALID_UTF8 = (r"(?:[\x{00}-\x{7F}]|[\x{C2}-\x{DF}][\x{80}-\x{BF}]|[\x{E0}-\x{EF}][\x{80}-\x{BF}]{2}"
              r"|[\x{F0}-\x{F4}][\x{80}-\x{BF}]{3})*")


def q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def in_list(values) -> str:
    return "(" + ", ".join(q(v) for v in values) + ")"


def counts_by_type(col: str = "event_type", weight: str = "1") -> str:
    return ", ".join(f"sum(CASE WHEN {col} = '{t}' THEN {weight} ELSE 0 END)::BIGINT AS n_{t}" for t in EVENT_TYPES)


def ingest_sql(files: str) -> list[str]:
    read = (f"read_csv({q(files)}, columns={{'raw_line': 'VARCHAR'}}, header=true, delim=chr(1), quote='', "
            "escape='', encoding='latin-1', filename=true, auto_detect=false, strict_mode=false)")
    return [
        f"CREATE OR REPLACE TABLE lines AS SELECT raw_line, filename AS source_file FROM {read}",
        """CREATE OR REPLACE TABLE bronze AS
           WITH f AS (SELECT source_file, min(rowid) AS first_row, count(*) AS n FROM lines GROUP BY source_file)
           SELECT l.raw_line, l.source_file, (l.rowid - f.first_row + 2)::BIGINT AS line_number,
                  (l.rowid - f.first_row + 1) = f.n AS is_last_line, now()::TIMESTAMP AS ingested_at
           FROM lines l JOIN f USING (source_file)""",
        "DROP TABLE lines",
    ]


def clean_sql(settings, fmt) -> list[str]:
    """Statements building ``classified`` (every bronze line with its disposition) and ``silver`` (accepted)."""
    conf, source = settings.clean, settings.source(fmt.name)
    columns = fmt.columns + fmt.optional_trailing
    header = fmt.header_line().lower().replace(" ", "")
    d = fmt.delimiter
    fields = [f"nullif(trim(fields[{i + 1}]), '') AS f_{c}" for i, c in enumerate(columns)]
    type_map = " ".join(f"WHEN {q(k)} THEN {q(v)}" for k, v in fmt.event_types.items())
    texts = ", ".join(f"try_strptime(t_clean, {q(f)})" for f in TEXT_TIME_FORMATS)
    naive = "text_ts" if source.timezone == "UTC" else f"timezone('UTC', timezone({q(source.timezone)}, text_ts))"
    lim = conf.limits

    def ident(col: str) -> tuple[str, str]:
        ok = f"(length({col}) <= 128 AND NOT regexp_matches({col}, '[\\x{{00}}-\\x{{1f}}\\x{{7f}}]'))"
        return (f"CASE WHEN {ok} THEN {col} END",
                f"CASE WHEN {col} IS NOT NULL AND NOT {ok} THEN 'is not a printable code of at most 128 characters' END")

    user, user_problem = ident("f_user_id")
    item, item_problem = ident("f_item_id")
    widths = " or ".join(map(str, fmt.widths))
    # (reason, condition, detail) in clean.REASONS order; the first true one is the line's reason.
    checks = [
        ("null_only_row", "all_empty", "'every field is empty'"),
        ("duplicate_header", "is_header AND line_number > 1", "'header line repeated'"),
        ("invalid_utf8", "bad_utf8", "'invalid UTF-8 bytes'"),
        ("truncated_line", "(NOT shape_ok OR NOT quotes_ok) AND is_last_line",
         "printf('last line of the file is cut short (%d fields)', n_fields)"),
        ("broken_quoting", "NOT quotes_ok", "'unbalanced double quote'"),
        ("wrong_column_count", "NOT shape_ok", f"printf('%d fields, expected {widths}', n_fields)"),
        ("missing_user", "f_user_id IS NULL", "'user_id is empty'"),
        ("invalid_user_id", "user_problem IS NOT NULL", "printf('user_id ''%s'' %s', f_user_id, user_problem)"),
        ("missing_item", "f_item_id IS NULL AND coalesce(event_type, '') <> 'search'", "'item_id is empty'"),
        ("invalid_item_id", "item_problem IS NOT NULL", "printf('item_id ''%s'' %s', f_item_id, item_problem)"),
        ("unknown_event_type", "event_type IS NULL",
         f"printf('event type ''%s'' is not known for format {fmt.name}', coalesce(f_event_type, '<empty>'))"),
        ("unparseable_timestamp", "event_time IS NULL", "printf('time ''%s'' cannot be parsed', f_event_time)"),
        ("timestamp_before_range", f"event_time < TIMESTAMP {q(source.min_time.isoformat())}",
         f"printf('time %s is before {source.min_time.isoformat()}', event_time)"),
        ("future_timestamp", f"event_time > ingested_at + INTERVAL {conf.future_tolerance_hours} HOUR",
         "printf('time %s is after the ingest time %s', event_time, ingested_at)"),
        ("invalid_price", f"f_price IS NOT NULL AND (price_raw IS NULL OR isnan(price_raw) OR price_raw <= 0 "
                          f"OR price_raw > {lim.max_price})",
         f"printf('price ''%s'' must be a number in (0, {lim.max_price:g}]', f_price)"),
        ("invalid_quantity", f"f_quantity IS NOT NULL AND (qty_raw IS NULL OR qty_raw <= 0 OR qty_raw > {lim.max_quantity})",
         f"printf('quantity ''%s'' must be an integer in [1, {lim.max_quantity}]', f_quantity)"),
        ("invalid_rating", "event_type = 'review' AND f_rating IS NOT NULL AND (rating_raw IS NULL OR isnan(rating_raw) "
                           "OR rating_raw < 0 OR rating_raw > 10)",
         "printf('rating ''%s'' must be a number in [0, 10]', f_rating)"),
    ]
    reason = "CASE " + " ".join(f"WHEN coalesce({c}, false) THEN {q(r)}" for r, c, _ in checks) + " END"
    detail = "CASE " + " ".join(f"WHEN coalesce({c}, false) THEN {t}" for _, c, t in checks) + " END"
    near = in_list(conf.dedupe.near_types)
    qty_fill = conf.missing["quantity"]
    impute_qty = (f"CASE WHEN disposition = 'accepted' AND quantity IS NULL AND event_type IN {in_list(QUANTITY_TYPES)} "
                  f"THEN {int(round(qty_fill.value or 0))} END") if qty_fill.strategy == "constant" else "NULL::INTEGER"
    if qty_fill.strategy not in ("constant", "keep") or conf.missing["price"].strategy != "keep":
        raise SystemExit("the DuckDB twin implements the default missing-value policies only")
    o, b = conf.outliers, conf.bots
    derived = ("substr(sha256(concat_ws(chr(1), " + q(fmt.name) + ", user_id, item_id, event_type, "
               "CAST(event_time AS VARCHAR), f_price, f_quantity, f_session_id, f_search_query, f_rating)), 1, 32)")

    def bounds(col: str) -> str:
        return f"""CREATE OR REPLACE TEMP TABLE bounds_{col} AS
          WITH vals AS (SELECT coalesce(category_id, chr(0) || 'all') AS cat, {col}::DOUBLE AS v FROM marked
                        WHERE disposition = 'accepted' AND {col} IS NOT NULL),
               both_ AS (SELECT * FROM vals UNION ALL SELECT chr(0) || 'all', v FROM vals),
               med AS (SELECT cat, quantile_disc(v, 0.5) AS med, count(v) AS n FROM both_ GROUP BY cat),
               mad AS (SELECT cat, med, n, quantile_disc(abs(v - med), 0.5) AS mad FROM both_ JOIN med USING (cat)
                       GROUP BY ALL)
          SELECT cat, n, med - greatest(mad * 1.4826, abs(med) * 0.01) * {o.mad_threshold} AS lo,
                 med + greatest(mad * 1.4826, abs(med) * 0.01) * {o.mad_threshold} AS hi FROM mad"""

    def outlier(col: str) -> str:
        glob = f"(SELECT {{}} FROM bounds_{col} WHERE cat = chr(0) || 'all')"
        per = f"(SELECT cat, lo, hi FROM bounds_{col} WHERE cat <> chr(0) || 'all' AND n >= {o.min_category_events})"
        return (f"LEFT JOIN {per} AS b_{col} ON coalesce(m.category_id, chr(0) || 'all') = b_{col}.cat",
                f"coalesce(m.disposition = 'accepted' AND m.{col} IS NOT NULL AND "
                f"(m.{col} < coalesce(b_{col}.lo, {glob.format('lo')}) OR m.{col} > coalesce(b_{col}.hi, "
                f"{glob.format('hi')})), false) AS {col}_outlier")

    pj, pf = outlier("price")
    qj, qf = outlier("quantity")
    return [
        f"""CREATE OR REPLACE TEMP TABLE parsed AS
          WITH s AS (
            SELECT *, CASE WHEN contains(raw_line, '"')
                        THEN list_transform(regexp_extract_all(raw_line, '(?:^|{d})("(?:[^"]|"")*"|[^{d}"]*)', 1),
                                            lambda x: CASE WHEN x LIKE '"%"' THEN replace(x[2:-2], '""', '"') ELSE x END)
                        ELSE string_split(raw_line, {q(d)}) END AS fields,
                   len(string_split(regexp_replace(raw_line, '"([^"]|"")*"', '', 'g'), {q(d)})) AS n_fields
            FROM bronze)
          SELECT raw_line, source_file, line_number, is_last_line, ingested_at, n_fields, {", ".join(fields)},
                 n_fields IN ({", ".join(map(str, fmt.widths))}) AS shape_ok,
                 (length(raw_line) - length(replace(raw_line, '"', ''))) % 2 = 0 AS quotes_ok,
                 (regexp_matches(raw_line, '[\\x{{80}}-\\x{{FF}}]') AND NOT regexp_full_match(raw_line, {q(VALID_UTF8)}))
                   OR contains(raw_line, chr(65533)) AS bad_utf8,
                 (lower(regexp_replace(raw_line, '[ "]', '', 'g')) = {q(header)}
                  OR starts_with(lower(regexp_replace(raw_line, '[ "]', '', 'g')), {q(header + d)})) AS is_header,
                 regexp_full_match(raw_line, '[\\s"{d}]*') AS all_empty
          FROM s""",
        f"""CREATE OR REPLACE TEMP TABLE typed AS
          WITH t AS (
            SELECT *, {user} AS user_id, {user_problem} AS user_problem, {item} AS item_id,
                   {item_problem} AS item_problem, CASE lower(f_event_type) {type_map} END AS event_type,
                   regexp_full_match(f_event_time, '\\d+(\\.\\d+)?') AS t_num,
                   TRY_CAST(f_event_time AS DECIMAL(38, 6)) AS t_dec,
                   regexp_replace(f_event_time, '(?i)\\s+(utc|gmt)$', 'Z') AS t_clean,
                   regexp_matches(f_event_time, '(?i)(z|[+-]\\d\\d(:?\\d\\d)?|\\s(utc|gmt)|[a-z]+/[a-z_]+)$') AS t_zoned,
                   TRY_CAST(f_price AS DOUBLE) AS price_raw,
                   CASE WHEN regexp_full_match(f_quantity, '[+-]?\\d+(\\.0+)?')
                        THEN TRY_CAST(regexp_replace(f_quantity, '\\.0+$', '') AS BIGINT) END AS qty_raw,
                   TRY_CAST(f_rating AS DOUBLE) AS rating_raw
            FROM parsed),
          tt AS (
            SELECT *, coalesce(TRY_CAST(t_clean AS TIMESTAMPTZ)::TIMESTAMP, {texts}) AS text_ts,
                   make_timestamp(TRY_CAST(CASE WHEN t_dec < 1e11 THEN t_dec * 1000000 WHEN t_dec < 1e14 THEN t_dec * 1000
                                                WHEN t_dec < 1e17 THEN t_dec ELSE t_dec / 1000 END AS BIGINT)) AS epoch_ts
            FROM t),
          typed AS (
            SELECT *, CASE WHEN t_num THEN epoch_ts WHEN t_zoned THEN text_ts ELSE {naive} END AS event_time FROM tt)
          SELECT raw_line, source_file, line_number, {reason} AS reason, {detail} AS detail,
                 coalesce(f_event_id, {derived}) AS event_id, user_id, f_session_id AS session_id, item_id,
                 f_category_id AS category_id, f_brand AS brand, price_raw AS price, qty_raw::INTEGER AS quantity,
                 event_type, f_search_query AS search_query, CASE WHEN event_type = 'review' THEN rating_raw END AS rating,
                 event_time, event_time::DATE AS event_date
          FROM typed""",
        f"""CREATE OR REPLACE TEMP TABLE marked AS
          WITH v AS (SELECT *, row_number() OVER (PARTITION BY event_id ORDER BY source_file, line_number) AS rn
                     FROM typed WHERE reason IS NULL),
               e AS (SELECT * EXCLUDE (rn), CASE WHEN rn > 1 THEN 'duplicate_exact' ELSE 'accepted' END AS disposition
                     FROM v),
               n AS (SELECT * EXCLUDE (disposition),
                            CASE WHEN epoch(event_time) - epoch(lag(event_time) OVER (
                                        PARTITION BY user_id, item_id, event_type
                                        ORDER BY event_time, source_file, line_number)) <= {conf.dedupe.near_window_seconds}
                                 THEN 'duplicate_near' ELSE 'accepted' END AS disposition
                     FROM e WHERE disposition = 'accepted' AND event_type IN {near})
          SELECT *, 'quarantine' AS disposition FROM typed WHERE reason IS NOT NULL
          UNION ALL BY NAME SELECT * FROM e WHERE NOT (disposition = 'accepted' AND event_type IN {near})
          UNION ALL BY NAME SELECT * FROM n""",
        bounds("price"),
        bounds("quantity"),
        f"""CREATE OR REPLACE TEMP TABLE bots AS
          WITH ev AS (SELECT user_id, event_time FROM marked
                      WHERE disposition = 'accepted' AND event_type NOT IN ('purchase', 'review')),
               per_min AS (SELECT user_id, max(c) AS peak_minute FROM
                             (SELECT user_id, date_trunc('minute', event_time), count(*) AS c FROM ev GROUP BY ALL)
                           GROUP BY user_id),
               per_day AS (SELECT user_id, max(c) AS peak_day FROM
                             (SELECT user_id, event_time::DATE, count(*) AS c FROM ev GROUP BY ALL) GROUP BY user_id),
               gaps AS (SELECT user_id, epoch(event_time) - epoch(lag(event_time) OVER (PARTITION BY user_id
                                                                                         ORDER BY event_time)) AS gap
                        FROM ev),
               reg AS (SELECT user_id, count(gap) AS n_gaps, avg(gap) AS mean_gap, stddev_pop(gap) AS sd_gap
                       FROM gaps GROUP BY user_id),
               r AS (SELECT user_id, concat_ws('; ',
                        CASE WHEN peak_minute > {b.max_events_per_minute} THEN printf('%d events in one minute', peak_minute) END,
                        CASE WHEN peak_day > {b.max_events_per_day} THEN printf('%d events in one day', peak_day) END,
                        CASE WHEN n_gaps + 1 >= {b.min_events_for_regularity} AND mean_gap > 0
                                  AND sd_gap / mean_gap < {b.max_gap_cv}
                             THEN printf('machine-regular gaps (mean %.1fs, cv %.3f)', mean_gap, sd_gap / mean_gap) END
                     ) AS bot_reason
                     FROM per_min JOIN per_day USING (user_id) JOIN reg USING (user_id))
          SELECT * FROM r WHERE bot_reason <> ''""",
        f"""CREATE OR REPLACE TABLE classified AS
          SELECT m.* EXCLUDE (quantity), coalesce(m.quantity, {impute_qty}) AS quantity,
                 CASE WHEN {impute_qty} IS NOT NULL THEN ['quantity'] ELSE []::VARCHAR[] END AS imputed,
                 {pf}, {qf}, bots.bot_reason, bots.bot_reason IS NOT NULL AS is_bot
          FROM marked m {pj} {qj} LEFT JOIN bots USING (user_id)""",
        """CREATE OR REPLACE TABLE silver AS
          SELECT event_id, user_id, session_id, item_id, category_id, brand, price, quantity, event_type, search_query,
                 rating, event_time, event_date, 'canonical' AS source, source_file, line_number, is_bot, bot_reason,
                 price_outlier, quantity_outlier, imputed
          FROM classified WHERE disposition = 'accepted'""",
        """CREATE OR REPLACE TABLE quarantine AS
          SELECT raw_line AS raw_record, 'canonical' AS source_format, source_file, line_number, reason, detail
          FROM classified WHERE disposition = 'quarantine'""",
    ]


def sessionize_sql(settings) -> list[str]:
    gap_us = settings.features.session_gap_minutes * 60 * 1_000_000
    funnel = "'none'"
    for name in ("view", "favourite", "cart", "purchase"):
        funnel = f"CASE WHEN n_{name} > 0 THEN '{name}' ELSE {funnel} END"
    return [f"""CREATE OR REPLACE TABLE sessions AS
      WITH w AS (SELECT *, session_id IS NULL AS derived,
                        lag(event_time) OVER (PARTITION BY user_id, event_date, session_id IS NULL
                                              ORDER BY event_time, event_id) AS prev FROM silver),
           o AS (SELECT *, CASE WHEN prev IS NULL OR epoch_us(event_time) - epoch_us(prev) > {gap_us}
                                THEN epoch(event_time)::BIGINT END AS started FROM w),
           s AS (SELECT *, last_value(started IGNORE NULLS) OVER (PARTITION BY user_id, event_date, derived
                        ORDER BY event_time, event_id ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS start_ FROM o),
           tagged AS (SELECT *, NOT derived AS from_source,
                             coalesce(session_id, user_id || ':' || CAST(start_ AS VARCHAR)) AS session_key FROM s),
           g AS (SELECT user_id, event_date AS session_date, session_key, from_source, min(event_time) AS start_time,
                        max(event_time) AS end_time, count(*) AS n_events, {counts_by_type()},
                        count(DISTINCT item_id) AS n_items, count(DISTINCT category_id) AS n_categories,
                        max(is_bot::INT) AS bot_
                 FROM tagged GROUP BY ALL)
      SELECT session_key AS session_id, user_id, session_date, start_time, end_time,
             (epoch(end_time) - epoch(start_time))::BIGINT AS duration_seconds, n_events,
             {", ".join(f"n_{t}" for t in EVENT_TYPES)}, n_items, n_categories, n_purchase > 0 AS converted,
             {funnel} AS funnel_step, bot_ = 1 AS is_bot, from_source
      FROM g"""]


def featurize_sql(settings) -> list[str]:
    conf = settings.features
    weight = "CASE event_type " + " ".join(f"WHEN '{t}' THEN {float(conf.event_weights.get(t, 0.0))}"
                                           for t in EVENT_TYPES) + " ELSE 0.0 END"
    h = conf.half_life_days
    bots = "AND NOT is_bot" if conf.exclude_bots else ""
    hours = ", ".join(f"count(*) FILTER (WHERE hour(event_time) = {i})" for i in range(24))

    def latest(col: str, order: str = "(event_time, event_id)") -> str:
        return f"arg_max({col}, {order}) FILTER (WHERE {col} IS NOT NULL)"

    sums = ", ".join(f"sum(n_{t})::BIGINT AS n_{t}" for t in EVENT_TYPES)
    by_date = "(event_date, last_event_time)"
    window = "event_date <= (SELECT as_of FROM as_of)" + (
        f" AND event_date > (SELECT as_of FROM as_of) - {conf.window_days}" if conf.window_days else "")
    tw = conf.trend_window_days

    def popularity(key: str, extra: str) -> str:
        recent = f"event_date > (SELECT as_of FROM as_of) - {tw}"
        earlier = f"NOT ({recent}) AND event_date > (SELECT as_of FROM as_of) - {2 * tw}"
        return f"""
          WITH a AS (
            SELECT {key}, {extra}, {sums},
                   sum(CASE WHEN {recent} THEN n_view ELSE 0 END) AS views_recent,
                   sum(CASE WHEN {earlier} THEN n_view ELSE 0 END) AS views_earlier,
                   sum(CASE WHEN {recent} THEN n_purchase ELSE 0 END) AS purchases_recent,
                   sum(CASE WHEN {earlier} THEN n_purchase ELSE 0 END) AS purchases_earlier,
                   sum(CASE WHEN {recent} THEN n_events ELSE 0 END) AS ev_recent,
                   sum(CASE WHEN {earlier} THEN n_events ELSE 0 END) AS ev_earlier,
                   count(DISTINCT user_id) AS distinct_users,
                   count(DISTINCT user_id) FILTER (WHERE n_view > 0) AS viewers,
                   count(DISTINCT user_id) FILTER (WHERE n_purchase > 0) AS buyers,
                   round(sum(revenue), 6) AS revenue, sum(price_sum) AS ps, sum(price_n) AS pn,
                   sum(price_sumsq) AS pss, min(price_min) AS price_min, max(price_max) AS price_max
            FROM interactions_daily WHERE {window} AND {key} IS NOT NULL GROUP BY {key})
          SELECT * EXCLUDE (ev_recent, ev_earlier, ps, pn, pss),
                 round((ev_recent + 1) / (ev_earlier + 1), 6) AS trend,
                 CASE WHEN viewers > 0 THEN round(buyers / viewers, 6) END AS conversion_rate,
                 CASE WHEN pn > 0 THEN round(ps / pn, 6) END AS price_mean,
                 CASE WHEN pn > 0 THEN round(sqrt(greatest(pss / pn - (ps / pn) * (ps / pn), 0)), 6) END AS price_std,
                 (SELECT as_of FROM as_of) AS as_of
          FROM a"""

    def ratio(num: str, den: str, cap: bool = False) -> str:
        v = f"round({num} / {den}, 6)"
        return f"CASE WHEN {den} > 0 THEN {'least(' + v + ', 1.0)' if cap else v} END"

    def share(lo: int, hi: int) -> str:
        return "round((" + " + ".join(f"hours[{i + 1}]" for i in range(lo, hi)) + ") / n_events, 6)"

    return [
        f"""CREATE OR REPLACE TABLE interactions_daily AS
          SELECT user_id, item_id, event_date, {latest('category_id')} AS category_id, {latest('brand')} AS brand,
                 count(*) AS n_events, {counts_by_type()}, round(sum({weight}), 9) AS weight,
                 round(sum(({weight}) * pow(2.0, -((epoch(event_date + 1) - epoch_us(event_time) / 1e6) / 86400)
                                                  / {h})), 9) AS decayed_weight,
                 {latest('rating')} AS rating, min(event_time) AS first_event_time, max(event_time) AS last_event_time,
                 coalesce(sum(CASE WHEN event_type = 'purchase' THEN price * coalesce(quantity, 1) END), 0.0) AS revenue,
                 coalesce(sum(price), 0.0) AS price_sum, count(price) AS price_n, min(price) AS price_min,
                 max(price) AS price_max, coalesce(sum(price * price), 0.0) AS price_sumsq
          FROM silver WHERE item_id IS NOT NULL {bots} GROUP BY user_id, item_id, event_date""",
        f"""CREATE OR REPLACE TABLE user_daily AS
          SELECT user_id, event_date, count(*) AS n_events, {counts_by_type()}, sum(is_bot::BIGINT) AS bot_events,
                 coalesce(sum(CASE WHEN event_type = 'purchase' THEN price * coalesce(quantity, 1) END), 0.0) AS revenue,
                 coalesce(sum(CASE WHEN event_type = 'purchase' THEN coalesce(quantity, 1) END), 0)::BIGINT AS units,
                 coalesce(sum(price) FILTER (WHERE event_type = 'view'), 0.0) AS viewed_price_sum,
                 count(price) FILTER (WHERE event_type = 'view') AS viewed_price_n,
                 coalesce(sum(price) FILTER (WHERE event_type = 'purchase'), 0.0) AS bought_price_sum,
                 count(price) FILTER (WHERE event_type = 'purchase') AS bought_price_n,
                 [{hours}] AS hour_counts, min(event_time) AS first_event_time, max(event_time) AS last_event_time
          FROM silver GROUP BY user_id, event_date""",
        f"CREATE OR REPLACE TABLE as_of AS SELECT DATE {q(str(conf.as_of))} AS as_of" if conf.as_of
        else "CREATE OR REPLACE TABLE as_of AS SELECT max(event_date) AS as_of FROM user_daily",
        f"""CREATE OR REPLACE TABLE interactions AS
          SELECT user_id, item_id, {latest('category_id', by_date)} AS category_id, {latest('brand', by_date)} AS brand,
                 greatest(round(sum(decayed_weight * pow(2.0, -((SELECT as_of FROM as_of) - event_date) / {h})), 6), 0.0)
                   AS strength,
                 sum(n_events)::BIGINT AS n_events, {sums}, {latest('rating', by_date)} AS rating,
                 min(first_event_time) AS first_event_time, max(last_event_time) AS last_event_time,
                 (SELECT as_of FROM as_of) AS as_of
          FROM interactions_daily WHERE {window} GROUP BY user_id, item_id""",
        f"""CREATE OR REPLACE TABLE user_features AS
          WITH base AS (
            SELECT user_id, sum(n_events)::BIGINT AS n_events, {sums}, sum(bot_events) AS bot_events,
                   count(*) AS active_days, min(event_date) AS first_seen, max(event_date) AS last_seen,
                   max(event_date) FILTER (WHERE n_purchase > 0) AS last_purchase,
                   count(*) FILTER (WHERE n_purchase > 0) AS frequency, round(sum(revenue), 6) AS monetary,
                   sum(units) AS units, sum(viewed_price_sum) AS vps, sum(viewed_price_n) AS vpn,
                   sum(bought_price_sum) AS bps, sum(bought_price_n) AS bpn,
                   [{", ".join(f"sum(hour_counts[{i + 1}])" for i in range(24))}] AS hours,
                   [{", ".join(f"sum(CASE WHEN isodow(event_date) = {d + 1} THEN n_events ELSE 0 END)" for d in range(7))}]
                     AS weekdays
            FROM user_daily WHERE {window} GROUP BY user_id),
          sess AS (SELECT user_id, count(*) AS sessions, round(avg(duration_seconds), 6) AS avg_session_seconds,
                          round(avg(n_events), 6) AS avg_session_events
                   FROM sessions WHERE {window.replace('event_date', 'session_date')} GROUP BY user_id),
          per_cat AS (SELECT user_id, category_id, sum(n_events) AS n FROM interactions_daily
                      WHERE {window} AND category_id IS NOT NULL GROUP BY ALL),
          ent AS (SELECT user_id, round(-sum(p * log2(p)), 6) AS category_entropy, count(*) AS n_categories
                  FROM (SELECT user_id, n / sum(n) OVER (PARTITION BY user_id) AS p FROM per_cat) GROUP BY user_id),
          top AS (SELECT user_id, arg_max(category_id, (s, category_id)) AS top_category FROM
                    (SELECT user_id, category_id, sum(strength) AS s FROM interactions WHERE category_id IS NOT NULL
                     GROUP BY ALL) GROUP BY user_id),
          cats AS (SELECT coalesce(ent.user_id, top.user_id) AS user_id, category_entropy, n_categories, top_category
                   FROM ent FULL JOIN top USING (user_id))
          SELECT user_id, n_events, {", ".join(f"n_{t}" for t in EVENT_TYPES)},
                 {", ".join(f"round(n_{t} / n_events, 6) AS rate_{t}" for t in EVENT_TYPES)},
                 active_days, first_seen, last_seen, (SELECT as_of FROM as_of) - last_seen AS recency_days,
                 (SELECT as_of FROM as_of) - last_purchase AS purchase_recency_days, frequency, monetary, units,
                 coalesce(sessions, 0) AS sessions, avg_session_seconds, avg_session_events,
                 {ratio('n_cart', 'n_view', True)} AS view_to_cart, {ratio('n_purchase', 'n_cart', True)} AS cart_to_purchase,
                 category_entropy, coalesce(n_categories, 0) AS n_categories, top_category,
                 {ratio('vps', 'vpn')} AS avg_viewed_price, {ratio('bps', 'bpn')} AS avg_bought_price,
                 list_transform(hours, lambda x: round(x / n_events, 6)) AS hour_share,
                 list_transform(weekdays, lambda x: round(x / n_events, 6)) AS weekday_share,
                 list_position(hours, list_max(hours)) - 1 AS peak_hour,
                 {share(0, 6)} AS share_night, {share(6, 12)} AS share_morning, {share(12, 18)} AS share_afternoon,
                 {share(18, 24)} AS share_evening, round((weekdays[6] + weekdays[7]) / n_events, 6) AS weekend_share,
                 round(bot_events / n_events, 6) AS bot_score, (SELECT as_of FROM as_of) AS as_of
          FROM base LEFT JOIN sess USING (user_id) LEFT JOIN cats USING (user_id)""",
        "CREATE OR REPLACE TABLE item_features AS " + popularity(
            "item_id", f"{latest('category_id', by_date)} AS category_id, {latest('brand', by_date)} AS brand"),
        "CREATE OR REPLACE TABLE category_features AS " + popularity("category_id", "count(DISTINCT item_id) AS n_items"),
    ]


OUTPUTS = {
    "clean": {"silver_events": ("silver", "event_date"), "silver_quarantine": ("quarantine", None)},
    "sessionize": {"gold_sessions": ("sessions", "session_date")},
    "featurize": {"gold_interactions_daily": ("interactions_daily", "event_date"),
                  "gold_user_daily": ("user_daily", "event_date"), "gold_interactions": ("interactions", None),
                  "gold_user_features": ("user_features", None), "gold_item_features": ("item_features", None),
                  "gold_category_features": ("category_features", None)},
}


def write_outputs(con, stage: str, out: Path) -> None:
    for name, (table, partition) in OUTPUTS[stage].items():
        opts = "FORMAT parquet, COMPRESSION snappy, OVERWRITE_OR_IGNORE true"
        if partition:
            opts += f", PARTITION_BY ({partition})"
        con.execute(f"COPY {table} TO {q(str(out / name))} ({opts})")


def run(files: str, work: Path, settings, threads: int, memory_limit: str) -> dict:
    """Run the four stages on the export's CSV files; returns seconds per stage and the counts to reconcile."""
    import duckdb

    from shopmine.io.sources import get_format

    work.mkdir(parents=True, exist_ok=True)
    db = work / "twin.duckdb"
    db.unlink(missing_ok=True)
    con = duckdb.connect(str(db))
    con.execute(f"SET threads = {threads}")
    con.execute(f"SET memory_limit = {q(memory_limit)}")
    con.execute(f"SET temp_directory = {q(str(work / 'tmp'))}")
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET preserve_insertion_order = true")
    out = work / "tables"
    out.mkdir(exist_ok=True)
    stages = {
        "ingest": ingest_sql(files),
        "clean": clean_sql(settings, get_format("canonical")),
        "sessionize": sessionize_sql(settings),
        "featurize": featurize_sql(settings),
    }
    seconds = {}
    for stage, statements in stages.items():
        t0 = time.perf_counter()
        for sql in statements:
            con.execute(sql)
        if stage in OUTPUTS:
            write_outputs(con, stage, out)
        seconds[stage] = round(time.perf_counter() - t0, 2)
    disp = dict(con.execute("SELECT disposition, count(*) FROM classified GROUP BY ALL").fetchall())
    counts = {
        "rows_in": con.execute("SELECT count(*) FROM bronze").fetchone()[0],
        **{d: disp.get(d, 0) for d in ("accepted", "quarantine", "duplicate_exact", "duplicate_near")},
        "reasons": dict(con.execute("SELECT reason, count(*) FROM quarantine GROUP BY ALL ORDER BY 1").fetchall()),
        "bot_users": con.execute("SELECT count(DISTINCT user_id) FROM silver WHERE is_bot").fetchone()[0],
        "sessions": con.execute("SELECT count(*) FROM sessions").fetchone()[0],
        "interactions": con.execute("SELECT count(*) FROM interactions").fetchone()[0],
        "strength_sum": con.execute("SELECT round(sum(strength), 3) FROM interactions").fetchone()[0],
        "user_features": con.execute("SELECT count(*) FROM user_features").fetchone()[0],
        "item_features": con.execute("SELECT count(*) FROM item_features").fetchone()[0],
        "category_features": con.execute("SELECT count(*) FROM category_features").fetchone()[0],
        "monetary_sum": con.execute("SELECT round(sum(monetary), 2) FROM user_features").fetchone()[0],
    }
    settings_used = dict(con.execute("SELECT name, value FROM duckdb_settings() WHERE name IN "
                                     "('threads', 'memory_limit', 'preserve_insertion_order', 'TimeZone')").fetchall())
    con.close()
    return {"seconds": seconds, "counts": counts, "duckdb_version": duckdb.__version__, "settings": settings_used}
