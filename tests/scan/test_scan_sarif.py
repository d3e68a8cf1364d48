"""SARIF 2.1.0 output: schema-valid, stable rule ids and fingerprints, clones and skipped files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from scan_fakes import SAMPLE_PROJECT, FakeAnalyzer, write_tree

from mtpeft.scan import Thresholds, rule_id, scan_tree, to_sarif
from mtpeft.scan.sarif import rule_ids

SCHEMA = json.loads((Path(__file__).parent / "sarif-schema-2.1.0.json").read_text(encoding="utf-8"))


def sarif_of(root: Path, thresholds: Thresholds | None = None) -> dict[str, Any]:
    result = scan_tree(root, FakeAnalyzer(), progress=False)
    # Through a JSON round trip, as a consumer reads it.
    return json.loads(json.dumps(to_sarif(result, thresholds)))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_tree(tmp_path / "project", SAMPLE_PROJECT)


def results_by(log: dict[str, Any], rule: str) -> list[dict[str, Any]]:
    return [r for r in log["runs"][0]["results"] if r["ruleId"] == rule]


def test_output_validates_against_the_official_schema(project: Path) -> None:
    log = sarif_of(project)
    # The schema declares draft-04 ("$schema": "http://json-schema.org/draft-04/schema#").
    assert SCHEMA["$schema"].startswith("http://json-schema.org/draft-04/")
    jsonschema.Draft4Validator.check_schema(SCHEMA)
    jsonschema.Draft4Validator(SCHEMA).validate(log)
    broken = json.loads(json.dumps(log))
    broken["runs"][0]["results"][0]["level"] = "fatal"  # the validator does catch a bad log
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(SCHEMA).validate(broken)
    run = log["runs"][0]
    # What the log must contain for the check to mean something: findings, clones, skipped files.
    assert results_by(log, "mtpeft/vulnerability")
    assert results_by(log, "mtpeft/clone") and results_by(log, "mtpeft/exact-duplicate")
    skipped = [
        n
        for n in run["invocations"][0]["toolExecutionNotifications"]
        if n["descriptor"]["id"] == "mtpeft/skipped-file"
    ]
    assert {n["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for n in skipped} == {
        "bin/blob.c",
        "legacy.py",
    }


def test_driver_rules_levels_and_probabilities(project: Path) -> None:
    log = sarif_of(project)
    driver = log["runs"][0]["tool"]["driver"]
    assert driver["name"] == "mtpeft" and driver["version"]
    rule_ids = [r["id"] for r in driver["rules"]]
    assert rule_ids == ["mtpeft/vulnerability", "mtpeft/flaky", "mtpeft/clone", "mtpeft/exact-duplicate"]
    vulns = {
        r["locations"][0]["logicalLocations"][0]["fullyQualifiedName"]: r
        for r in results_by(log, "mtpeft/vulnerability")
    }
    # The fake gives strcpy 0.95, system 0.75, gets 0.55, plain code 0.10.
    assert {
        name: r["level"]
        for name, r in vulns.items()
        if r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "src/util.c"
    } == {
        "copy": "error",
        "run": "warning",
        "read_line": "note",
    }
    copy = vulns["copy"]
    assert copy["properties"]["probability"] == pytest.approx(0.95)
    assert "0.95" in copy["message"]["text"]
    region = copy["locations"][0]["physicalLocation"]["region"]
    assert region == {"startLine": 2, "startColumn": 1, "endLine": 4, "endColumn": 2}
    flaky = results_by(log, "mtpeft/flaky")
    assert {r["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] for r in flaky} == {
        "test_slow",
        "FooTest.waits",
    }


def test_thresholds_are_configurable(project: Path) -> None:
    strict = sarif_of(project, Thresholds(error=0.99, warning=0.9, note=0.8))
    levels = sorted(r["level"] for r in results_by(strict, "mtpeft/vulnerability"))
    assert levels == [
        "warning",
        "warning",
        "warning",
    ]  # the three eval/strcpy ones at 0.95; 0.75 and 0.55 drop out


def test_locations_are_relative_to_srcroot_and_escaped(project: Path) -> None:
    log = sarif_of(project)
    run = log["runs"][0]
    assert run["originalUriBaseIds"]["%SRCROOT%"]["uri"] == project.resolve().as_uri() + "/"
    uris = {
        r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]: r["locations"][0][
            "physicalLocation"
        ]["artifactLocation"]["uriBaseId"]
        for r in run["results"]
    }
    assert uris["%5Bred%5D.py"] == "%SRCROOT%"
    assert all(not uri.startswith("/") for uri in uris)


def test_clone_results_point_at_both_functions(project: Path) -> None:
    log = sarif_of(project)
    (exact,) = results_by(log, "mtpeft/exact-duplicate")
    assert exact["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "src/app.py"
    related = exact["relatedLocations"][0]
    assert related["physicalLocation"]["artifactLocation"]["uri"] == "src/copy.py"
    assert "[weighted_sum](1)" in exact["message"]["text"]  # an embedded link to the related location
    (near,) = results_by(log, "mtpeft/clone")
    assert near["relatedLocations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "src/near.py"
    assert 0.5 <= near["properties"]["probability"] <= 1 and near["properties"]["similarity"] > 0.9


def fingerprints(log: dict[str, Any]) -> dict[tuple[str, str], tuple[str, int]]:
    out = {}
    for r in log["runs"][0]["results"]:
        name = r["locations"][0]["logicalLocations"][0]["fullyQualifiedName"]
        out[(r["ruleId"], name)] = (
            r["partialFingerprints"]["mtpeft/v1"],
            r["locations"][0]["physicalLocation"]["region"]["startLine"],
        )
    return out


def test_fingerprints_survive_inserted_lines_and_change_with_the_code(project: Path) -> None:
    before = fingerprints(sarif_of(project))
    util = project / "src" / "util.c"
    util.write_text("// a new header comment\n// and another line\n\n" + util.read_text())
    after = fingerprints(sarif_of(project))
    key = ("mtpeft/vulnerability", "copy")
    assert after[key][0] == before[key][0]  # same alert: dashboards do not duplicate it
    assert after[key][1] == before[key][1] + 3  # while the region follows the code
    assert len({fp for fp, _ in after.values()}) == len(after)  # unique within the log

    util.write_text(util.read_text().replace("strcpy(dst, src);", "strcpy(dst, src);\n    dst[0] = 0;"))
    changed = fingerprints(sarif_of(project))
    assert changed[key][0] != before[key][0]


def test_rule_ids_are_stable_slugs_of_the_task_name() -> None:
    assert rule_id("vulnerability") == "mtpeft/vulnerability"
    assert rule_id("vuln-chrome") == "mtpeft/vuln-chrome"
    assert rule_id("Vuln Chrome!") == "mtpeft/vuln-chrome"
    assert rule_id("py.defect_v2") == "mtpeft/py.defect_v2"


def test_colliding_task_names_get_distinct_stable_rule_ids() -> None:
    ids = rule_ids(["vuln-a", "Vuln A", "exact-duplicate"])
    assert ids["vuln-a"] == "mtpeft/vuln-a"
    assert (
        ids["Vuln A"].startswith("mtpeft/vuln-a-")
        and ids["Vuln A"] == rule_ids(["vuln-a", "Vuln A"])["Vuln A"]
    )
    assert ids["exact-duplicate"] != "mtpeft/exact-duplicate"  # that id belongs to the built-in rule
