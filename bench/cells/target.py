"""Time to a target quality as a cell's measurement (``measure.mode: time_to_target``): what to reach,
and what each seed's run and the cell's score came to. Light on purpose (Pydantic, no torch), like the
rest of the cell contract that imports it.

Scoring follows MLPerf Training's rules (:mod:`bench.target.scoring` computes them): several runs with
different seeds, the fastest and the slowest dropped, the mean of the rest; one run that never reached the
target counts as the slowest, two make the cell 'not reached'.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

LOWER_IS_BETTER = ("loss", "perplexity")  # metric names ending so are reached from above


TARGET_UNIT = "s to target"  # the unit a time-to-target cell is compared and reported in


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Target(_Section):
    metric: str = Field(
        ...,
        description="What the workload's evaluation reports, split first: val_accuracy, val_loss, test_accuracy, "
        "test_loss, val_perplexity, ...",
    )
    value: float = Field(..., description="The quality to reach: at least this (accuracy), at most this (a loss).")

    @field_validator("metric")
    @classmethod
    def _split_and_name(cls, v: str) -> str:
        split, _, name = v.partition("_")
        if split not in ("val", "test") or not name:
            raise ValueError(f"{v!r}: expected <val|test>_<metric>, e.g. val_accuracy or val_loss")
        return v

    @property
    def lower_is_better(self) -> bool:
        return self.metric.endswith(LOWER_IS_BETTER)

    def reached(self, value: float) -> bool:
        return value <= self.value if self.lower_is_better else value >= self.value

    def describe(self) -> str:
        return f"{self.metric} {'<=' if self.lower_is_better else '>='} {self.value:g}"


class TargetRun(_Section):
    """One seed's run towards the target."""

    seed: int = Field(..., description="The run's training seed.")
    reached: bool = Field(..., description="The target was reached within the allowed epochs.")
    seconds: float = Field(
        ...,
        description="Clock from before the data is touched to the evaluation that first met the target "
        "(or to the end of training when it did not), evaluations included, checkpoint writes excluded, s.",
    )
    setup_s: float = Field(..., description="Building data, model and optimizer before the clock started, s.")
    compile_s: float | None = Field(None, description="torch.compile: the first step minus a later one, s.")
    epochs: float = Field(..., description="Epochs trained when the target was met (fractional when mid-epoch).")
    steps: int = Field(..., description="Optimizer steps taken when the target was met.")
    samples: int = Field(..., description="Training samples seen (every rank) when the target was met.")
    final: float = Field(..., description="The target metric at the last evaluation on the clock.")
    confirmation: float | None = Field(
        None,
        description="The target metric at the evaluation after the one that met it, trained and evaluated off the "
        "clock (None: not asked for, not reached, or no epoch left): what the luck check tests.",
    )
    evals: list[dict[str, float]] = Field(
        default_factory=list, description="Each evaluation: seconds, epochs, steps, value (the learning curve)."
    )
    samples_per_s: float | None = Field(None, description="Training samples per second of training-loop time.")
    resumed: bool = Field(False, description="Continued from a checkpoint after an interruption (clock carried).")

    @property
    def seconds_with_setup(self) -> float:
        """The run's time with its setup and compile charged (the second score's figure)."""
        return self.seconds + self.setup_s + (self.compile_s or 0.0)


class TargetResult(_Section):
    """The cell's score over its runs (MLPerf's rule) and the checks beside it."""

    target: Target = Field(..., description="What was to be reached.")
    runs: list[TargetRun] = Field(default_factory=list, description="Every seed's run, in seed order.")
    reached: bool = Field(..., description="At most one run failed to reach the target (MLPerf).")
    score_s: float | None = Field(
        None, description="Mean time to target without the fastest and the slowest run, s (None: not reached)."
    )
    score_with_setup_s: float | None = Field(
        None, description="The same score with each run's setup (and compile) time charged, s."
    )
    min_s: float | None = Field(None, description="Fastest run's time to target, s.")
    max_s: float | None = Field(None, description="Slowest converged run's time to target, s.")
    cv_pct: float | None = Field(None, description="Coefficient of variation of the converged runs' times, %.")
    epochs_to_target: float | None = Field(None, description="Mean epochs to target over the scored runs.")
    samples_to_target: float | None = Field(None, description="Mean samples to target over the scored runs.")
    converged: int = Field(0, description="Runs that reached the target.")
    p_beyond_target: float | None = Field(
        None,
        description="One-sided t-test that the runs' final metric is beyond the target (p < 0.01 passes: "
        "modded-nanogpt's record rule); None with fewer than two runs.",
    )
    lucky: bool = Field(False, description="Reached, but p_beyond_target >= 0.01: the target may be met by chance.")
    status: Literal["reached", "not reached"] = Field(..., description="The verdict in words.")
    note: str | None = Field(None, description="Why the cell is not reached, or what to check, one line.")

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
