"""The one-line rules every binary behaviour model must beat, scored like models: each is a SQL expression over the
same point-in-time rows (higher = more likely to buy), calibrated to a probability on the validation users by the
same isotonic step as the models, evaluated on the same test rows and written beside them (``ops.model_metrics``,
``gold.propensity_scores``). The served score is the best of the models *and* the rules on validation.
"""

from __future__ import annotations

# task -> rule -> (SQL score over the labelled / serving rows, what it says)
RULES: dict[str, dict[str, tuple[str, str]]] = {
    "purchase": {
        "past_purchases": ("CAST(coalesce(n_purchase, 0) AS DOUBLE)", "the user's purchases before the cutoff"),
        "recency": ("-hours_since_last", "the more recent the user's last event, the likelier a purchase"),
        "carted_not_bought": ("open_carts", "items the user carted and has not bought"),
    },
    "item_purchase": {
        "carted_not_bought": ("p_carted_not_bought * 1000 + p_n_cart",
                              "carted and not bought (then by carts): the cart-reminder rule"),
        "recency": ("-p_ui_hours_last", "the more recent the user's last event on the item, the likelier"),
        "past_purchases": ("p_n_purchase", "the user bought the item before (repeat purchase)"),
    },
}


def names(task: str) -> list[str]:
    return list(RULES.get(task, {}))


def is_rule(task: str, model: str) -> bool:
    return model in RULES.get(task, {})


def score_sql(task: str, rule: str) -> str:
    """A SQLTransformer statement adding ``rule_score`` and ``p_raw`` (the score squashed into [0, 1], same order)."""
    expr = RULES[task][rule][0]
    return (f"SELECT *, CAST({expr} AS DOUBLE) AS rule_score, "
            f"0.5 + 0.5 * CAST({expr} AS DOUBLE) / (1 + abs(CAST({expr} AS DOUBLE))) AS p_raw FROM __THIS__")
