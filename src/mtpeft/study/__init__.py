"""Studies: experiment grids over models x methods x task sets x seeds, their analyses and grouping advice."""

from mtpeft.study.analysis import StudyAnalysis, analyse
from mtpeft.study.grid import PlannedRun, expand
from mtpeft.study.grouping import Recommendation, recommend
from mtpeft.study.runner import Outcome, plan, run_study
from mtpeft.study.spec import StudySpec, load_study, parse_study

__all__ = [
    "Outcome",
    "PlannedRun",
    "Recommendation",
    "StudyAnalysis",
    "StudySpec",
    "analyse",
    "expand",
    "load_study",
    "parse_study",
    "plan",
    "recommend",
    "run_study",
]
