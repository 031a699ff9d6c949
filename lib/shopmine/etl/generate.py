"""Synthetic clickstream: a Spark job built from ``spark.range``, deterministic by seed, sized by conf.

Sessions of human users walk a funnel (view -> favourite / cart -> purchase of the item just viewed, with rates
close to Taobao UserBehavior: ~89 % views, ~5.5 % carts, ~3 % favourites, ~2.5 % purchases, ~1 % searches); each
item has a fixed category, brand and log-normal price, and popularity follows a Zipf law. Users carry the signal
real shops have:

* **tastes**: ``TASTES`` liked categories per user with Dirichlet(1, 1, 1) weights; each session follows one of
  them, and ``generate.taste_share`` of its views are items of that category (the rest: the whole catalogue);
* **repeat visits**: ``WISH`` liked items per user (in their categories) that ``generate.revisit_share`` of the
  views come back to, more often when the view leads to a cart (x2.5) or a purchase (x4): what gets bought is what
  was looked at before;
* **propensity**: a log-normal per-user factor (mean ~1) scales the user's cart and purchase rates (and favourites,
  by its square root), so carts and favourites observed before a cutoff foretell purchases after it;
* **lifetimes**: a user shops during a span of 20-100 % of the days, so recent activity foretells more of it.

Bots crawl the catalogue at machine-regular 0.5 s gaps. Exact duplicates, near duplicates (same user/item/type 1 s
later) and malformed lines of every class are injected; what was injected, and every user's tastes and propensity,
are returned as ground truth (``ops.generator_truth``).

All randomness is a hash of (seed, ids), never ``rand()``: the output does not depend on partitioning.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import reduce

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from shopmine.conf import GenerateConf
from shopmine.io import fs
from shopmine.io.sources import CANONICAL_COLUMNS, PII_COLUMNS

MAX_WIDTH = len(CANONICAL_COLUMNS) + len(PII_COLUMNS)
TIME_FORMAT = "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'"

# Malformed classes the generator injects, with the reason code clean must give each.
MALFORMED = (
    "null_only_row", "duplicate_header", "invalid_utf8", "broken_quoting", "wrong_column_count", "malformed_json",
    "missing_user", "invalid_user_id", "missing_item", "unknown_event_type", "unparseable_timestamp",
    "timestamp_before_range", "future_timestamp", "invalid_price", "invalid_quantity",
)
HUMAN_SESSION_MEAN = 12
BOT_SESSION_LEN = 400
TASTES = 3       # liked categories per user
WISH = 4         # liked items per user (repeat visits)
CATEGORY_STEP = 7919  # item i is in category ((i - 1) * STEP + seed) mod C: a bijection per block of C items


def _u(seed: int, *cols: Column | str | int) -> Column:
    """A deterministic uniform in [0, 1) from a hash of the seed and the given values."""
    parts = [F.lit(seed)] + [c if isinstance(c, Column) else (F.lit(c) if isinstance(c, int) else F.col(c)) for c in cols]
    return (F.pmod(F.xxhash64(*parts), F.lit(1 << 40)) / float(1 << 40)).cast("double")


def _zipf(u: Column, n: int, s: float) -> Column:
    """Inverse CDF of a continuous power law on [1, n+1): rank 1 is the most popular item."""
    if abs(s - 1.0) < 1e-9:
        rank = F.exp(u * F.log(F.lit(float(n + 1))))
    else:
        a = 1.0 - s
        rank = F.pow(u * (float(n + 1) ** a - 1.0) + 1.0, 1.0 / a)
    return F.least(F.floor(rank), F.lit(n)).cast("long")


@dataclass(frozen=True)
class Generated:
    csv_lines: DataFrame    # one column "line" (ASCII except the invalid-UTF-8 faults, written as Latin-1)
    json_lines: DataFrame   # one column "line"
    truth: DataFrame        # ops.generator_truth rows
    events: DataFrame       # the canonical rows before faults and duplicates (string columns, is_bot): for benchmarks
    columns: tuple[str, ...] = CANONICAL_COLUMNS   # the export's columns (with the PII ones when generate.pii)


def generate(spark: SparkSession, conf: GenerateConf) -> Generated:
    seed = conf.seed
    n_users, n_items = conf.users, conf.items
    sessions_n = max(1, conf.events // HUMAN_SESSION_MEAN)
    start = F.lit(conf.start.isoformat()).cast("timestamp")
    parts = max(2, conf.events // 500_000)

    sess = spark.range(0, sessions_n, numPartitions=parts).withColumnRenamed("id", "session_n")
    # Heavy-tailed activity: a few users own many sessions.
    sess = sess.withColumn("user_n", F.floor(F.pow(_u(seed, "session_n", 1), 1.6) * n_users).cast("long"))
    is_bot = _u(seed, "user_n", 2) < conf.bot_share
    length = F.when(is_bot, F.lit(BOT_SESSION_LEN)).otherwise(
        (1 + F.floor(-F.log(1 - _u(seed, "session_n", 3)) * (HUMAN_SESSION_MEAN - 1))).cast("int"))
    # Sessions start in waking hours, more in the evening.
    # Each user is a customer for a while: a lifetime of 20-100 % of the days, placed inside them; their sessions
    # fall on its days, so who was active lately comes back and who stopped does not (recency carries signal).
    life = (0.2 + 0.8 * _u(seed, "user_n", 80)) * conf.days
    join = _u(seed, "user_n", 81) * (conf.days - life)
    day = F.least(F.floor(join + _u(seed, "session_n", 4) * life), F.lit(conf.days - 1))
    hour = F.lit(7) + F.floor(F.pow(_u(seed, "session_n", 5), 0.7) * 17)
    start_s = day * 86400 + hour * 3600 + F.floor(_u(seed, "session_n", 6) * 3600)
    sess = sess.select("session_n", "user_n", is_bot.alias("is_bot"), length.alias("len"), start_s.alias("start_s"))

    ev = sess.select("*", F.explode(F.sequence(F.lit(0), F.col("len") - 1)).alias("j"))
    # Human events: j * 62 s plus a 0..50 s jitter, so consecutive gaps vary (12..112 s) but never reorder.
    jitter = F.floor(_u(seed, "session_n", "j", 7) * 50)
    offset = F.when(F.col("is_bot"), F.col("j") * 0.5).otherwise(F.col("j") * 62.0 + jitter)
    r = _u(seed, "session_n", "j", 8)
    # the user's propensity: log-normal, mean ~1, clipped to [0.2, 4]; scales favourites (sqrt), carts, purchases
    prop = _propensity(seed)
    fav, cart = 0.030 * F.sqrt(prop), 0.055 * prop
    edges = [("search", F.lit(0.010)), ("favourite", fav), ("cart", cart), ("remove_from_cart", F.lit(0.007)),
             ("purchase", 0.025 * prop)]
    etype = _draw(r, [(F.lit(name), width) for name, width in edges], F.lit("view"),
                  F.when(F.col("is_bot") | (F.col("j") == 0), F.lit("view")))
    ev = ev.select("*", etype.alias("event_type"), (F.col("start_s") + offset).alias("t"))
    # Favourite, cart, remove and purchase act on the item of the session's latest view: a real funnel.
    last_view = F.last(F.when(F.col("event_type") == "view", F.col("j")), ignorenulls=True).over(
        Window.partitionBy("session_n").orderBy("j").rowsBetween(Window.unboundedPreceding, Window.currentRow))
    ev = ev.withColumn("ref", F.when(F.col("event_type") == "search", F.col("j")).otherwise(last_view))
    # what the view led to (the events that act on it), so liked items are the ones carted and bought
    led = Window.partitionBy("session_n").orderBy("ref").rangeBetween(0, 0)  # the rows of the same view
    ev = ev.withColumn("_bought", F.max((F.col("event_type") == "purchase").cast("int")).over(led)) \
           .withColumn("_carted", F.max(F.col("event_type").isin("cart", "favourite").cast("int")).over(led))
    item_human = _human_item(seed, conf, n_items)
    item_bot = F.pmod(F.col("session_n") * 7919 + F.col("j"), F.lit(n_items)) + 1
    ev = ev.withColumn("item_n", F.when(F.col("is_bot"), item_bot).otherwise(item_human)).drop("_bought", "_carted")
    ev = ev.withColumn("event_n", F.col("session_n") * 1000 + F.col("j"))

    price = F.round(F.exp(F.lit(2.5) + 1.2 * _box_muller(seed, "item_n")), 2)
    qty = F.when(F.col("event_type").isin("cart", "purchase", "remove_from_cart"),
                 1 + F.floor(F.pow(_u(seed, "event_n", 10), 4) * 5).cast("int"))
    canonical = ev.select(
        F.concat(F.lit("e"), F.col("event_n").cast("string")).alias("event_id"),
        F.date_format(F.timestamp_micros(((F.unix_seconds(start) + F.col("t")) * 1_000_000).cast("long")),
                      TIME_FORMAT).alias("event_time"),
        F.concat(F.lit("u"), F.col("user_n").cast("string")).alias("user_id"),
        F.concat(F.lit("s"), F.col("session_n").cast("string")).alias("session_id"),
        "event_type",
        F.when(F.col("event_type") != "search", F.concat(F.lit("i"), F.col("item_n").cast("string"))).alias("item_id"),
        F.when(F.col("event_type") != "search", _category_id(_category(seed, conf.categories, F.col("item_n"))))
        .alias("category_id"),
        F.when(F.col("event_type") != "search",
               F.concat(F.lit("b"), F.pmod(F.xxhash64(F.lit(seed + 1), "item_n"), F.lit(conf.brands)).cast("string")))
        .alias("brand"),
        F.when(F.col("event_type") != "search", F.format_string("%.2f", price)).alias("price"),
        qty.cast("string").alias("quantity"),
        F.when(F.col("event_type") == "search", F.concat(F.lit("query "), F.col("item_n").cast("string")))
        .alias("search_query"),
        F.lit(None).cast("string").alias("rating"),
        *_pii(seed, conf.pii),
        "is_bot", "event_n",
    )
    columns = CANONICAL_COLUMNS + (PII_COLUMNS if conf.pii else ())
    roll = _u(seed, "event_n", 11)
    as_json = _u(seed, "event_n", 12) < conf.json_share
    canonical = canonical.withColumn("as_json", as_json)
    m = conf.malformed_share
    malformed = (roll < m) & ~F.col("is_bot")
    fault = F.element_at(F.array(*[F.lit(x) for x in MALFORMED]),
                         (F.floor(_u(seed, "event_n", 13) * len(MALFORMED)) + 1).cast("int"))
    # JSON-specific and CSV-specific faults go to the file kind where they make sense.
    fault = (F.when(F.col("as_json") & fault.isin("wrong_column_count", "broken_quoting", "duplicate_header",
                                                   "invalid_utf8", "null_only_row"), "malformed_json")
             .when(~F.col("as_json") & (fault == "malformed_json"), "wrong_column_count")
             # a search has no item: a corrupted type there would be reported as missing_item, so corrupt its time
             .when((F.col("event_type") == "search") & (fault == "unknown_event_type"), "unparseable_timestamp")
             .otherwise(fault))
    rows = canonical.withColumn("fault", F.when(malformed, fault))
    rows = rows.withColumn("line", _render(rows, columns))

    exact = rows.where(F.col("fault").isNull() & (_u(seed, "event_n", 14) < conf.exact_duplicate_share))
    near_src = rows.where(F.col("fault").isNull() & (F.col("event_type") == "view") & ~F.col("is_bot")
                          & (_u(seed, "event_n", 15) < conf.near_duplicate_share))
    near = near_src.withColumn("event_id", F.concat("event_id", F.lit("n"))) \
                   .withColumn("event_time", F.date_format(F.to_timestamp("event_time", TIME_FORMAT) + F.expr("INTERVAL 1 SECOND"),
                                                           TIME_FORMAT))
    near = near.withColumn("line", _render(near, columns))
    out = rows.select("line", "as_json").unionByName(exact.select("line", "as_json")).unionByName(near.select("line", "as_json"))

    truth = (
        rows.where(F.col("fault").isNotNull()).select(
            F.lit("malformed").alias("kind"), F.col("fault").alias("expected"),
            F.regexp_replace("line", "\u00e9", "\ufffd").alias("raw_line"), "user_id", "event_id")
        .unionByName(exact.select(F.lit("duplicate_exact").alias("kind"), F.lit("duplicate_exact").alias("expected"),
                                  "line", "user_id", "event_id").withColumnRenamed("line", "raw_line"))
        .unionByName(near.select(F.lit("duplicate_near").alias("kind"), F.lit("duplicate_near").alias("expected"),
                                 "line", "user_id", "event_id").withColumnRenamed("line", "raw_line"))
        .unionByName(canonical.where("is_bot").select(F.lit("bot").alias("kind"), F.lit("bot").alias("expected"),
                                                      F.lit(None).cast("string").alias("raw_line"), "user_id",
                                                      F.lit(None).cast("string").alias("event_id")).distinct())
        .unionByName(_taste_truth(seed, conf, sess.where(~F.col("is_bot")).select("user_n").distinct()))
    )
    return Generated(out.where(~F.col("as_json")).select("line"), out.where("as_json").select("line"), truth,
                     canonical.drop("as_json", "event_n"), columns)


def _draw(u: Column, choices: list[tuple[Column, Column]], otherwise: Column, chain: Column | None = None) -> Column:
    """The value of the first (value, width) choice whose cumulative width exceeds the uniform ``u``, else
    ``otherwise``; ``chain``: a ``when`` chain whose conditions come first."""
    upper = F.lit(0.0)
    for value, width in choices:
        upper = upper + width
        chain = F.when(u < upper, value) if chain is None else chain.when(u < upper, value)
    return chain.otherwise(otherwise)


def _category(seed: int, categories: int, item: Column) -> Column:
    """The category index (0..C-1) of item number ``item``."""
    return F.pmod((item - 1) * CATEGORY_STEP + seed, F.lit(categories))


def _category_id(index: Column) -> Column:
    return F.concat(F.lit("c"), index.cast("string"))


def _in_category(seed: int, categories: int, n_items: int, index: Column, u: Column, s: float) -> Column:
    """An item of category ``index``, its rank in the category drawn from the Zipf law (``u`` uniform): the items
    of category c are base + 1 + C·k, k = 0, 1, …, so the category's popular items are the catalogue's popular
    ones."""
    step_inv = pow(CATEGORY_STEP, -1, categories)
    base = F.pmod((index - seed) * step_inv, F.lit(categories))
    per_category = max(1, n_items // categories)
    return F.least(base + 1 + categories * (_zipf(u, per_category, s) - 1), F.lit(n_items)).cast("long")


def _tastes(seed: int, conf: GenerateConf) -> list[tuple[Column, Column]]:
    """The user's ``TASTES`` (category index, weight) pairs: categories of items drawn from the Zipf law (popular
    categories are liked by many), weights Dirichlet(1, …, 1) (normalised exponentials)."""
    cats = [_category(seed, conf.categories, _zipf(_u(seed, "user_n", 30 + k), conf.items, conf.zipf_exponent))
            for k in range(TASTES)]
    gammas = [-F.log(1 - _u(seed, "user_n", 40 + k)) for k in range(TASTES)]
    total = sum(gammas[1:], gammas[0])
    return [(c, g / total) for c, g in zip(cats, gammas)]


def _propensity(seed: int) -> Column:
    """The user's purchase propensity: exp(0.8 Z − 0.32) (mean 1), clipped to [0.2, 4]."""
    z = _box_muller(seed, "user_n", 50)
    return F.least(F.greatest(F.exp(0.8 * z - 0.32), F.lit(0.2)), F.lit(4.0))


def _human_item(seed: int, conf: GenerateConf, n_items: int) -> Column:
    """The item of a human event (every event acting on view ``ref`` gets the same one): one of the user's liked
    items (``revisit_share``, x2.5 when the view led to a cart or favourite, x4 to a purchase), else with
    ``taste_share`` an item of the session's category, else any item (Zipf)."""
    s = conf.zipf_exponent
    tastes = _tastes(seed, conf)
    session_cat = _draw(_u(seed, "session_n", 60), tastes, tastes[-1][0])  # taste k with probability weight_k
    wish = F.array(*[_in_category(seed, conf.categories, n_items, tastes[w % TASTES][0],
                                  _u(seed, "user_n", 70 + w), s) for w in range(WISH)])
    p_wish = F.least(F.lit(conf.revisit_share) * (1 + 1.5 * F.col("_carted") + 3.0 * F.col("_bought")), F.lit(0.9))
    which = (F.floor(_u(seed, "session_n", "ref", 61) * WISH) + 1).cast("int")
    u_item = _u(seed, "session_n", "ref", 9)
    return (F.when(_u(seed, "session_n", "ref", 62) < p_wish, F.element_at(wish, which))
            .when(_u(seed, "session_n", "ref", 63) < conf.taste_share,
                  _in_category(seed, conf.categories, n_items, session_cat, u_item, s))
            .otherwise(_zipf(u_item, n_items, s)))


def _taste_truth(seed: int, conf: GenerateConf, users: DataFrame) -> DataFrame:
    """ops.generator_truth rows of the human users' tastes (expected: the category, raw_line: its weight) and
    propensities (expected: the factor)."""
    user = F.concat(F.lit("u"), F.col("user_n").cast("string"))
    none = F.lit(None).cast("string")
    rows = [users.select(F.lit("taste").alias("kind"), _category_id(cat).alias("expected"),
                         F.format_string("%.4f", w).alias("raw_line"), user.alias("user_id"), none.alias("event_id"))
            for cat, w in _tastes(seed, conf)]
    rows.append(users.select(F.lit("propensity").alias("kind"), F.format_string("%.4f", _propensity(seed))
                             .alias("expected"), none.alias("raw_line"), user.alias("user_id"), none.alias("event_id")))
    return reduce(DataFrame.unionByName, rows)


def _pii(seed: int, on: bool) -> list[Column]:
    """Made-up personal data of human users (bots have none): an email, a phone number and an IP address."""
    if not on:
        return []
    human = ~F.col("is_bot")
    h = F.pmod(F.xxhash64(F.lit(seed + 2), "user_n"), F.lit(1 << 30))
    return [
        F.when(human, F.concat(F.lit("shopper"), F.col("user_n").cast("string"), F.lit("@mail.example.com"))).alias("email"),
        F.when(human, F.format_string("+44 7700 %06d", F.pmod(h, F.lit(1_000_000)))).alias("phone"),
        F.when(human, F.format_string("10.%d.%d.%d", F.pmod(h, F.lit(250)), F.pmod(h / 250, F.lit(250)).cast("int"),
                                      F.pmod(h / 62500, F.lit(250)).cast("int") + 1)).alias("ip"),
    ]


def _box_muller(seed: int, col: str, salt: int = 20) -> Column:
    u1 = F.greatest(_u(seed, col, salt), F.lit(1e-12))
    u2 = _u(seed, col, salt + 1)
    return F.sqrt(-2 * F.log(u1)) * F.cos(2 * 3.141592653589793 * u2)


def _render(df: DataFrame, columns: tuple[str, ...] = CANONICAL_COLUMNS) -> Column:
    """The output line for each row: clean CSV / JSON, or its corrupted form when ``fault`` is set."""
    c = F.col
    f = c("fault")
    bad = {
        "event_time": F.when(f == "unparseable_timestamp", F.lit("not-a-time"))
                       .when(f == "timestamp_before_range", F.lit("1990-01-01T00:00:00.000Z"))
                       .when(f == "future_timestamp", F.lit("2099-01-01T00:00:00.000Z")).otherwise(c("event_time")),
        "user_id": F.when(f == "missing_user", F.lit(None)).when(f == "invalid_user_id", F.repeat(F.lit("u"), 200))
                    .otherwise(c("user_id")),
        "event_type": F.when(f == "unknown_event_type", F.lit("teleport")).otherwise(c("event_type")),
        # missing_item only makes sense for a non-search event
        "item_id": F.when(f == "missing_item", F.lit(None)).otherwise(c("item_id")),
        "price": F.when(f == "invalid_price", F.element_at(F.array(F.lit("-5.00"), F.lit("0"), F.lit("99999999")),
                                                           (F.pmod(c("event_n"), F.lit(3)) + 1).cast("int")))
                  .otherwise(c("price")),
        "quantity": F.when(f == "invalid_quantity", F.lit("0")).otherwise(c("quantity")),
        "brand": F.when(f == "broken_quoting", F.lit('"unclosed brand')).when(f == "invalid_utf8", F.lit("caf\u00e9"))
                  .otherwise(c("brand")),
    }
    cols = {name: bad.get(name, c(name)) for name in columns}
    cols["event_type"] = F.when(f == "missing_item", F.lit("view")).otherwise(cols["event_type"])
    cols["search_query"] = F.when(f == "missing_item", F.lit(None)).otherwise(cols["search_query"])
    csv = F.concat_ws(",", *[F.coalesce(cols[n], F.lit("")) for n in columns])
    # one field more than the widest valid canonical line (its optional PII columns included)
    extra = ",extra" * (MAX_WIDTH + 1 - len(columns))
    csv = (F.when(f == "null_only_row", F.lit("," * (len(columns) - 1)))
           .when(f == "duplicate_header", F.lit(",".join(columns)))
           .when(f == "wrong_column_count", F.concat(csv, F.lit(extra)))
           .otherwise(csv))
    js = F.to_json(F.struct(*[cols[n].alias(n) for n in columns]))
    js = F.when(f == "malformed_json", F.substring(js, 1, 25)).otherwise(js)
    return F.when(c("as_json"), js).otherwise(csv)


def write_raw(gen: Generated, out_dir: str, files: int) -> None:
    """Write the export: CSV part files (header, Latin-1 so injected bytes are invalid UTF-8) and JSON lines."""
    (gen.csv_lines.repartition(files, "line").sortWithinPartitions("line")
     .withColumnRenamed("line", ",".join(gen.columns))
     .write.mode("overwrite")
     .option("header", True).option("encoding", "ISO-8859-1").option("sep", "\u0001").option("quote", "")
     .option("escapeQuotes", False).option("ignoreLeadingWhiteSpace", False).option("ignoreTrailingWhiteSpace", False)
     .option("compression", "gzip")
     .csv(f"{out_dir}/csv"))
    (gen.json_lines.repartition(max(1, files // 4), "line").sortWithinPartitions("line")
     .write.mode("overwrite").option("compression", "gzip").text(f"{out_dir}/json"))
    # Spark's text writer names files .txt; JSON lines get their proper extension.
    fs.rename_suffix(gen.json_lines.sparkSession, f"{out_dir}/json", ".txt.gz", ".jsonl.gz")

