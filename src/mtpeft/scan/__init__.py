"""`mtpeft scan`, model-free half: extract code units from a tree, ask an Analyzer, report.

Torch-free on purpose (numpy, tree-sitter, rich, jinja2 only): the model side implements
:class:`Analyzer` and hands it to :func:`scan_tree`; the CLI then writes the result with
:func:`write_report` in one of :data:`FORMATS` (table, json, sarif, html).

    result = scan_tree("src/", analyzer, tasks=["vulnerability", "clone"], exclude=["gen/"])
    write_report(result, "sarif", sys.stdout)
"""

from mtpeft.scan.analyzer import Analyzer, Answer, TaskSpec, default_applies_to, positive_probability
from mtpeft.scan.clones import CloneOptions, ClonePair
from mtpeft.scan.driver import scan_tree
from mtpeft.scan.extract import Extraction, ExtractOptions, extract_tree
from mtpeft.scan.ignore import DEFAULT_EXCLUDES
from mtpeft.scan.languages import LANGUAGES
from mtpeft.scan.report import FORMATS, ReportOptions, save_report, to_json, write_report
from mtpeft.scan.result import Finding, ScanResult, Thresholds
from mtpeft.scan.sarif import rule_id, to_sarif
from mtpeft.scan.units import CodeUnit, SkippedFile

__all__ = [
    "DEFAULT_EXCLUDES",
    "FORMATS",
    "LANGUAGES",
    "Analyzer",
    "Answer",
    "CloneOptions",
    "ClonePair",
    "CodeUnit",
    "ExtractOptions",
    "Extraction",
    "Finding",
    "ReportOptions",
    "ScanResult",
    "SkippedFile",
    "TaskSpec",
    "Thresholds",
    "default_applies_to",
    "extract_tree",
    "positive_probability",
    "rule_id",
    "save_report",
    "scan_tree",
    "to_json",
    "to_sarif",
    "write_report",
]
