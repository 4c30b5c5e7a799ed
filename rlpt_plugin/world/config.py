"""Configuration of the synthetic world (knowledge base, corpus, defects, eval set)."""

from __future__ import annotations

from dataclasses import dataclass

from rlpt_plugin.world import vocab


class WorldConfigError(ValueError):
    """A WorldConfig with one or more invalid fields (the message lists all of them)."""


@dataclass(frozen=True, kw_only=True)
class WorldConfig:
    """Knobs of the synthetic world; every field is validated on construction.

    seed: drives everything (same config -> byte-identical world).
    num_entities: people in the knowledge base (each a unique first/last name pair).
    num_years .. num_employers: sizes of the attribute value sets (a prefix of the fixed lists).
    docs_per_entity: training biographies per person (one sentence per attribute, shuffled).
    templates_per_attribute: paraphrase templates used per attribute (at most 3).
    false_rate / unsafe_rate / degenerate_rate: per-sentence probabilities of the three defects
        (mutually exclusive) on sentences of non-systematic contexts.
    systematic_fraction: fraction of (entity, attribute) contexts whose MOST FREQUENT
        continuation in the corpus is bad (a myth, a trigger followed by an insult, or a template
        that degenerates; assigned in turn).
    systematic_share: share of an entity's documents (> 0.5) that carry the systematic bad
        continuation of a systematic context.
    eval_size: held-out prefixes (half aimed at systematic contexts when there are any).
    """

    seed: int = 0
    num_entities: int = 200
    num_years: int = 40
    num_cities: int = 12
    num_universities: int = 10
    num_fields: int = 10
    num_employers: int = 12
    docs_per_entity: int = 8
    templates_per_attribute: int = 3
    false_rate: float = 0.05
    unsafe_rate: float = 0.05
    degenerate_rate: float = 0.05
    systematic_fraction: float = 0.1
    systematic_share: float = 0.75
    eval_size: int = 200

    def __post_init__(self) -> None:
        errors: list[str] = []

        def check_int(field: str, low: int, high: int | None = None) -> None:
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int):
                errors.append(f"`{field}` must be an int, but is {value!r} instead.")
            elif value < low or (high is not None and value > high):
                bound = f">= {low}" if high is None else f"in [{low}, {high}]"
                errors.append(f"`{field}` must be {bound}, but is {value!r} instead.")

        def check_rate(field: str, low_open: bool = False) -> float | None:
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                errors.append(f"`{field}` must be a number, but is {value!r} instead.")
                return None
            if not (0.0 < value <= 1.0 if low_open else 0.0 <= value <= 1.0):
                span = "(0, 1]" if low_open else "[0, 1]"
                errors.append(f"`{field}` must be in {span}, but is {value!r} instead.")
                return None
            return float(value)

        check_int("seed", 0)
        check_int("num_entities", 1, len(vocab.FIRST_NAMES) * len(vocab.LAST_NAMES))
        for field, values in (("num_years", vocab.YEARS), ("num_cities", vocab.CITIES),
                              ("num_universities", vocab.UNIVERSITIES),
                              ("num_fields", vocab.FIELDS), ("num_employers", vocab.EMPLOYERS)):
            check_int(field, 2, len(values))  # >= 2: a false value needs an alternative
        check_int("docs_per_entity", 1)
        check_int("templates_per_attribute", 1, 3)
        check_int("eval_size", 0)
        rates = [check_rate(f) for f in ("false_rate", "unsafe_rate", "degenerate_rate")]
        if all(r is not None for r in rates) and sum(rates) > 1.0:  # type: ignore[arg-type]
            errors.append(f"`false_rate + unsafe_rate + degenerate_rate` must be <= 1, but is "
                          f"{sum(rates)!r} instead.")  # type: ignore[arg-type]
        check_rate("systematic_fraction")
        share = check_rate("systematic_share")
        if share is not None and share <= 0.5:
            errors.append(f"`systematic_share` must be > 0.5 (the bad continuation must be the "
                          f"most frequent), but is {share!r} instead.")
        if errors:
            raise WorldConfigError("invalid WorldConfig:\n  " + "\n  ".join(errors))

    def value_sets(self) -> dict[str, tuple[str, ...]]:
        """Attribute -> the values this world draws from."""
        return {
            "birth_year": vocab.YEARS[: self.num_years],
            "city": vocab.CITIES[: self.num_cities],
            "university": vocab.UNIVERSITIES[: self.num_universities],
            "field": vocab.FIELDS[: self.num_fields],
            "employer": vocab.EMPLOYERS[: self.num_employers],
        }
