"""``analysis.training.TrainingChecks``'s no-grad finding: told after ``NO_GRAD_STEPS`` steps in
a row without a gradient, or at the end for a parameter that never had one; a parameter used
on some steps only (a mixture-of-experts expert, a branch) is not a cut path."""

from __future__ import annotations

from gradlens.analysis.training import NO_GRAD_STEPS, TrainingChecks
from gradlens.records import Diagnostic, ParamStats, StepRecord

OK = ParamStats(1.0, 0.0, 1.0, 1.0, False)


def _feed(steps: list[tuple[int, set[str], set[str]]], opt: str = "SGD") -> list[Diagnostic]:
    """Feeds steps of (number, names with a gradient, names without); returns every finding,
    the end's included."""
    checks = TrainingChecks()
    records = [
        StepRecord(n, {g: OK for g in sorted(got)}, tuple(sorted(miss)), optimizer=opt)
        for n, got, miss in steps
    ]
    return checks.feed_steps(records) + checks.finish()


def test_a_parameter_missing_a_few_steps_then_used_is_not_reported() -> None:
    steps = [(0, {"a"}, {"b"}), (1, {"a"}, {"b"}), (2, {"a", "b"}, set()), (3, {"a"}, {"b"})]
    assert NO_GRAD_STEPS == 3
    assert _feed(steps) == []


def test_never_a_gradient_is_reported_at_the_third_step_or_at_the_end() -> None:
    (d,) = _feed([(n, {"a"}, {"b"}) for n in range(5)])
    assert (d.kind, d.name, d.step) == ("no-grad", "b", 0)
    assert "got no gradient on 3 steps in a row from step 0 (every step so far)" in d.message
    (d,) = _feed([(0, {"a"}, {"b"}), (1, {"a"}, {"b"})])  # two steps only: at the end
    assert (d.name, d.step) == ("b", 0)
    assert "on 2 steps in a row from step 0 (every step so far)" in d.message
    (d,) = _feed([(0, {"a"}, {"b"})])
    assert "b requires grad but got no gradient at step 0: it is not used" in d.message


def test_a_parameter_that_stops_getting_gradients_is_reported_as_cut_from_then_on() -> None:
    steps = [(n, {"a", "b"}, set()) for n in range(4)] + [(n, {"a"}, {"b"}) for n in (4, 5, 6)]
    (d,) = _feed(steps)
    assert (d.name, d.step) == ("b", 4)
    assert "had a gradient before, but got none on 3 steps in a row from step 4" in d.message
    assert _feed(steps[:-1]) == []  # two misses after gradients: nothing, even at the end


def test_gaps_in_the_step_numbers_are_steps_it_had_a_gradient() -> None:
    # Unrecorded steps (watch(every=k)) where every parameter had its gradient make no record.
    steps = [(0, {"a"}, {"b"}), (2, {"a"}, {"b"}), (4, {"a"}, {"b"})]
    assert _feed(steps) == []


def test_each_optimizer_counts_its_own_steps() -> None:
    checks = TrainingChecks()
    d_steps = [StepRecord(n, {"d": OK}, ("x",), optimizer="Adam") for n in range(2)]
    g_steps = [StepRecord(n, {"g": OK, "x": OK}, (), optimizer="Adam#2") for n in range(2)]
    # x got gradients through the second optimizer: not "never had one", and its run under
    # the first is two steps: nothing.
    mixed = [s for pair in zip(d_steps, g_steps, strict=True) for s in pair]
    assert checks.feed_steps(mixed) + checks.finish() == []
