"""Campaign versions as journeys see them: the in-flight policies of a publish, the change a
journey is told of, and where a migrating journey continues (the one rule, shared by the
workflow and the publish preview so a preview and what happens cannot disagree).

Stdlib only (the workflow sandbox passes it through)."""

from dataclasses import dataclass
from enum import StrEnum


class VersionStatus(StrEnum):
    DRAFT = "draft"
    LIVE = "live"
    RETIRED = "retired"


class VersionPolicy(StrEnum):
    """What a publish does to the journeys already running."""

    STAY = "stay"  # they finish the version they started on
    MIGRATE = "migrate"  # they switch at their next step boundary
    EXIT = "exit"  # they end, `exited`


@dataclass
class VersionChange:
    """A version published with `migrate` or `exit`, batch-signalled to the campaign's running
    journeys (`version_published`). Sending it twice is harmless: a journey applies a version
    once, and never one older than its own."""

    version: int
    policy: VersionPolicy


@dataclass
class VersionPlanQuery:
    """What `load_version_plan` reads: the plan of one version of a campaign."""

    campaign_id: int
    version: int


def exit_reason(version: int) -> str:
    return f"version {version} published"


def resume_index(given: list[int], new_steps: list[int]) -> int:
    """Where a journey that was given the steps `given` (ids, in the order it was given them)
    continues in a version whose steps are `new_steps` (ids, in order): just after the last
    given step that the new version keeps, so nothing before its position is sent again and a
    removed step's waiters get the next surviving step; at the first step when none is kept.
    `len(new_steps)`: past the end (the journey finishes)."""
    kept = {step_id: n for n, step_id in enumerate(new_steps)}
    for step_id in reversed(given):
        if step_id in kept:
            return kept[step_id] + 1
    return 0
