"""conf/grafana-dashboard.json, conf/prometheus.yml and conf/orch-alerts.yml against the
metrics orch maintain exports.

The exported names come from the code: orchestrator.metrics.Metrics built from the
shipped conf/orch.yaml, its registry rendered in Prometheus's text format and parsed
back (so ``orch_failovers`` is ``orch_failovers_total`` as a scrape shows it). Every
PromQL expression of the dashboard (panels, variables, annotations) and of the alerting
rules is parsed for the series it selects; each must be one orch exports, or Prometheus's
own ``up`` of the ``orch`` job that conf/prometheus.yml defines.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, Iterator, List, Set, Tuple

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.config import parse
from orchestrator.metrics import Metrics

CONF = Path(__file__).resolve().parents[1] / "conf"
PROMETHEUS_OWN = {"up"}  # series Prometheus makes for every scrape target
# PromQL words that look like names: operators, modifiers and aggregation clauses.
KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "inf", "nan"}
NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def shipped_config(tmp_path: Path) -> Any:
    """conf/orch.yaml as shipped, its password files pointed at files of the test's own."""
    raw = yaml.safe_load((CONF / "orch.yaml").read_text())
    for i, section in enumerate((raw["mysql"], raw["replication"], *(a["admin"] for a in raw["atlas"]))):
        secret = tmp_path / f"pass{i}"
        secret.write_text("not-a-real-password\n")
        section["password_file"] = str(secret)
    return parse(raw)


def exported(tmp_path: Path) -> Set[str]:
    """Every series name a scrape of orch maintain's metrics shows, from the code's registry."""
    metrics = Metrics(shipped_config(tmp_path))
    names = set()
    for family in text_string_to_metric_families(generate_latest(metrics.registry).decode()):
        names |= {sample.name for sample in family.samples}
    return names


def selectors(expr: str) -> List[str]:
    """The series names a PromQL expression selects (functions, keywords, label names and
    values, durations, numbers and Grafana variables left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # strings (label values)
    names = [m.group(1) for m in re.finditer(r'__name__\s*=~?\s*"([^"]*)"', expr)]
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(r"\$\{[^}]*\}|\$\w+", " ", text)  # Grafana variables
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # label lists
    for m in NAME.finditer(text):
        word, rest = m.group(0), text[m.end():]
        before = text[:m.start()]
        if word.lower() in KEYWORDS or rest.lstrip().startswith("("):  # a function or an aggregation
            continue
        if before and (before[-1].isdigit() or before[-1] == "."):  # 5m, 1e3, 0.5
            continue
        names.append(word)
    return names


def dashboard() -> Dict[str, Any]:
    return json.loads((CONF / "grafana-dashboard.json").read_text())


def dashboard_exprs(dash: Dict[str, Any]) -> Iterator[Tuple[str, str]]:
    """(where, PromQL) of every query in the dashboard."""
    def panels(items: List[Dict[str, Any]]) -> Iterator[Dict[str, Any]]:
        for p in items:
            yield p
            yield from panels(p.get("panels") or [])

    for p in panels(dash["panels"]):
        for target in p.get("targets") or []:
            yield f"panel {p['title']!r} {target['refId']}", target["expr"]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = re.fullmatch(r"label_values\((\w+),\s*\w+\)", query)
            assert m, f"variable {var['name']}: expected label_values(metric, label), got {query!r}"
            yield f"variable {var['name']}", m.group(1)
    for ann in dash["annotations"]["list"]:
        if ann.get("expr"):
            yield f"annotation {ann['name']!r}", ann["expr"]


def alert_exprs() -> Iterator[Tuple[str, str]]:
    rules = yaml.safe_load((CONF / "orch-alerts.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            yield f"alert {rule['alert']}", str(rule["expr"])


@pytest.mark.parametrize("expr, names", [
    ('sum by (instance) (1 - orch_node_read_only{instance=~"$instance"})', ["orch_node_read_only"]),
    ('up{job="orch"} == 0 or time() - orch_maintainer_last_pass_timestamp_seconds > 60',
     ["up", "orch_maintainer_last_pass_timestamp_seconds"]),
    ("orch_replication_threads_running == 0 and on (instance, node) orch_node_read_only == 1",
     ["orch_replication_threads_running", "orch_node_read_only"]),
    ("increase(orch_failovers_total[10m]) > 0", ["orch_failovers_total"]),
    ('rate(orch_maintainer_passes_total{instance=~"${instance}"}[$__rate_interval]) * 60', ["orch_maintainer_passes_total"]),
    ('{__name__="orch_paused"} offset 5m > bool 0.5e1', ["orch_paused"]),
    ("histogram_quantile(0.9, sum without (le) (rate(x_bucket[5m])))", ["x_bucket"]),
])
def test_selectors_finds_the_series_names_and_nothing_else(expr, names):
    assert selectors(expr) == names


def test_every_dashboard_query_names_an_exported_metric(tmp_path):
    names = exported(tmp_path)
    assert "orch_failovers_total" in names and "orch_node_read_only" in names  # the registry, as scraped
    problems = []
    queries = list(dashboard_exprs(dashboard()))
    assert len(queries) >= 15
    for where, expr in queries:
        found = selectors(expr)
        if not found:
            problems.append(f"{where}: selects no series: {expr}")
        problems += [f"{where}: {n} is not a metric orch exports" for n in found if n not in names | PROMETHEUS_OWN]
    assert problems == []


def test_every_alert_rule_names_an_exported_metric(tmp_path):
    names = exported(tmp_path)
    problems = []
    for where, expr in alert_exprs():
        found = selectors(expr)
        assert found, f"{where}: selects no series"
        problems += [f"{where}: {n} is not a metric orch exports" for n in found if n not in names | PROMETHEUS_OWN]
    assert problems == []


def test_a_misspelt_metric_is_caught(tmp_path):
    names = exported(tmp_path)
    assert [n for n in selectors("orch_failovers[10m]") if n not in names] == ["orch_failovers"]  # the counter's family, not its series
    assert [n for n in selectors("orch_node_readonly == 1") if n not in names] == ["orch_node_readonly"]


def test_the_dashboard_shows_every_metric_orch_exports(tmp_path):
    shown = {n for _, expr in dashboard_exprs(dashboard()) for n in selectors(expr)}
    missing = sorted(n for n in exported(tmp_path) if not n.endswith("_created") and n not in shown)
    assert missing == [], f"exported but on no panel: {missing}"


def test_dashboard_is_a_grafana_dashboard_with_its_own_datasource_variable():
    dash = dashboard()
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = []
    for p in dash["panels"]:
        ids.append(p["id"])
        assert {"h", "w", "x", "y"} <= set(p["gridPos"]), p["title"]
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert p["targets"] and p["description"], p["title"]
            assert all(t["datasource"] == p["datasource"] for t in p["targets"]), p["title"]
    assert len(ids) == len(set(ids)), "panel ids repeat"


def test_prometheus_scrapes_the_shipped_metrics_port_as_the_job_the_rules_name():
    prom = yaml.safe_load((CONF / "prometheus.yml").read_text())
    orch = yaml.safe_load((CONF / "orch.yaml").read_text())
    port = orch["maintainer"]["metrics_port"]
    assert port, "conf/orch.yaml serves no metrics: no alert of conf/orch-alerts.yml could fire"
    (job,) = [j for j in prom["scrape_configs"] if j["job_name"] == "orch"]
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    hosts = [n["host"] for n in orch["nodes"].values()]
    assert sorted(targets) == sorted(f"{h}:{port}" for h in hosts)
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert [sc["labels"]["cluster"] for sc in job["static_configs"]] == [orch["cluster"]]
    # The rules and the dashboard name this job.
    assert any('up{job="orch"}' in expr for _, expr in alert_exprs())
    assert any('up{job="orch"' in expr for _, expr in dashboard_exprs(dashboard()))
    # The rule file it loads is the shipped one, next to it.
    assert [(CONF / f).resolve() for f in prom["rule_files"]] == [(CONF / "orch-alerts.yml").resolve()]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian package prometheus)")
def test_promtool_accepts_the_config_the_rules_and_every_dashboard_query(tmp_path):
    """Prometheus's own parser: the config (with its rule file) and, as recording rules of a
    scratch file, every query of the dashboard (Grafana's $instance is a label value there)."""
    queries = [{"record": f"dashboard:query_{i}", "expr": expr} for i, (_, expr) in enumerate(dashboard_exprs(dashboard()))]
    scratch = tmp_path / "dashboard-queries.yml"
    scratch.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": queries}]}))
    for argv in (["promtool", "check", "config", str(CONF / "prometheus.yml")],
                 ["promtool", "check", "rules", str(CONF / "orch-alerts.yml")],
                 ["promtool", "check", "rules", str(scratch)]):
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0 and "SUCCESS" in proc.stdout, proc.stdout + proc.stderr
