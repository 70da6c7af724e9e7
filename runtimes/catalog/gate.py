"""The promotion gate: a candidate replaces the promoted version only if it is not worse."""

from __future__ import annotations

from runtimes.catalog.types import GateDecision, ModelVersion


def decide(
    candidate: ModelVersion, promoted: ModelVersion | None, tolerance: float
) -> GateDecision:
    """Promote if the candidate's metric >= the promoted version's minus ``tolerance``."""
    score = candidate.score
    if score is None:
        return GateDecision(
            promote=False,
            reason=f"the candidate has no {candidate.metric!r} metric to gate on",
            tolerance=tolerance,
        )
    if promoted is None:
        return GateDecision(
            promote=True,
            reason=f"first version: nothing promoted yet ({candidate.metric} {score:.4f})",
            candidate=score,
            tolerance=tolerance,
        )
    best = promoted.score
    if best is None:
        return GateDecision(
            promote=True,
            reason=f"v{promoted.version} has no {candidate.metric!r} metric to compare with",
            candidate=score,
            tolerance=tolerance,
        )
    verdict = score >= best - tolerance
    comparison = ">=" if verdict else "<"
    return GateDecision(
        promote=verdict,
        reason=(
            f"{candidate.metric} {score:.4f} {comparison} {best:.4f} (v{promoted.version}) "
            f"- tolerance {tolerance:g}" + ("" if verdict else ": kept as a candidate")
        ),
        candidate=score,
        promoted=best,
        tolerance=tolerance,
    )
