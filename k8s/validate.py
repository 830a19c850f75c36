#!/usr/bin/env python3
"""Render twincert's kustomizations and check every object they produce.

Run through scripts/k8s-validate.sh, which provides a venv with PyYAML and
kubernetes-validate (the Kubernetes JSON schemas ship inside that package, so
nothing here touches the network). There is no cluster: this is as far as
checking goes on the development machine.

What it does, per target (k8s/base, each overlay, k8s/monitoring):

1. render: with `kubectl kustomize` when kubectl is installed, and always with
   the small renderer below, which knows exactly the kustomize features these
   manifests use (resources, namespace, labels without selectors,
   strategic-merge patches, secretGenerator literals with fixed names). When
   both ran, their objects must be equal, which keeps the small renderer
   honest and lets the check run on a machine without kubectl.
2. schema: every object against the Kubernetes JSON schemas of each version
   in K8S_VERSIONS, strictly (unknown fields are errors). Custom resources
   (ServiceMonitor) have no schema there and get a structural check instead.
3. policy: what the issue asks of the manifests, so a later edit cannot drop
   it silently: probes, requests and limits, the restricted security context,
   topology spread and a PodDisruptionBudget for every Deployment; the
   replica counts of each overlay; Services that select pods; CA and DNS
   secrets mounted in worker pods only; least-privilege RBAC; no Secret
   objects outside the dev overlay; and every referenced ConfigMap or Secret
   either rendered or in the list of Secrets the README says to create.

Exit status 0 when everything passed, 1 otherwise. Plain files under
k8s/examples/ are schema- and policy-checked as they are, and
docs/grafana-dashboard.json is checked to be a dashboard (JSON, unique panel
ids, every query on twincert_* metrics through the ${DS_PROMETHEUS} input).
"""

from __future__ import annotations

import base64
import copy
import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

import kubernetes_validate
from kubernetes_validate import utils as kv_utils

K8S = Path(__file__).resolve().parent

# What to render, and what each rendering must contain (replicas per
# Deployment, minAvailable per PodDisruptionBudget).
TARGETS = {
    "base": {"replicas": {"twincert-api": 2, "twincert-worker": 2},
             "min_available": {"twincert-api": 1, "twincert-worker": 1}},
    "overlays/dev": {"replicas": {"twincert-api": 1, "twincert-worker": 1},
                     "min_available": {"twincert-api": 0, "twincert-worker": 0}},
    "overlays/production": {"replicas": {"twincert-api": 3, "twincert-worker": 3},
                            "min_available": {"twincert-api": 2, "twincert-worker": 2},
                            "priority_class": "twincert"},
    "monitoring": {},
}
PLAIN_DIRS = ["examples"]
DASHBOARD = K8S.parent / "docs" / "grafana-dashboard.json"

# Secrets an operator creates by hand (k8s/README.md, "Secrets").
DOCUMENTED_SECRETS = {"twincert-core", "twincert-db", "twincert-ca-eab",
                      "twincert-dns-tsig", "twincert-metrics-token"}
# Secrets that only workers may mount.
WORKER_ONLY_SECRETS = {"twincert-ca-eab", "twincert-dns-tsig"}

CLUSTER_SCOPED = {"Namespace", "PriorityClass", "ClusterRole",
                  "ClusterRoleBinding", "CustomResourceDefinition",
                  "StorageClass", "PersistentVolume"}

# Strategic-merge keys of the lists these manifests patch (from the
# Kubernetes API types' patchMergeKey); other lists are replaced.
MERGE_KEYS = {"containers": "name", "initContainers": "name", "volumes": "name",
              "volumeMounts": "mountPath", "env": "name", "ports": "containerPort",
              "topologySpreadConstraints": "topologyKey"}

KUSTOMIZE_KEYS = {"apiVersion", "kind", "namespace", "labels", "resources",
                  "patches", "generatorOptions", "secretGenerator"}


class Failures:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, msg: str) -> None:
        self.items.append(f"{where}: {msg}")


def ident(obj: dict) -> str:
    meta = obj.get("metadata", {})
    ns = meta.get("namespace")
    return f"{obj.get('kind')}/{(ns + '/') if ns else ''}{meta.get('name')}"


class StrictLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys; Kubernetes' decoder refuses them."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml_docs(path: Path) -> list[dict]:
    with open(path) as f:
        return [d for d in yaml.load_all(f, Loader=StrictLoader) if d]


# --- the small renderer --------------------------------------------------

def strategic_merge(base, patch, key=None):
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = strategic_merge(out[k], v, k)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list) and key in MERGE_KEYS:
        mk = MERGE_KEYS[key]
        out = [copy.deepcopy(x) for x in base]
        for item in patch:
            for i, cur in enumerate(out):
                if isinstance(cur, dict) and cur.get(mk) == item.get(mk):
                    out[i] = strategic_merge(cur, item)
                    break
            else:
                out.append(copy.deepcopy(item))
        return out
    return copy.deepcopy(patch)


def render_py(directory: Path) -> list[dict]:
    kpath = directory / "kustomization.yaml"
    kust = load_yaml_docs(kpath)[0]
    unknown = set(kust) - KUSTOMIZE_KEYS
    if unknown:
        raise ValueError(f"{kpath}: the small renderer does not know {sorted(unknown)}; "
                         "extend k8s/validate.py or keep to the features it knows")
    objs: list[dict] = []
    for res in kust.get("resources", []):
        p = (directory / res).resolve()
        objs.extend(render_py(p) if p.is_dir() else load_yaml_docs(p))

    opts = kust.get("generatorOptions", {})
    if kust.get("secretGenerator") and not opts.get("disableNameSuffixHash"):
        raise ValueError(f"{kpath}: secretGenerator needs disableNameSuffixHash here")
    for gen in kust.get("secretGenerator", []):
        data = {}
        for lit in gen.get("literals", []):
            k, _, v = lit.partition("=")
            data[k] = base64.b64encode(v.encode()).decode()
        meta = {"name": gen["name"]}
        if gen.get("namespace"):
            meta["namespace"] = gen["namespace"]
        if opts.get("labels"):
            meta["labels"] = dict(opts["labels"])
        objs.append({"apiVersion": "v1", "kind": "Secret", "metadata": meta,
                     "type": gen.get("type", "Opaque"), "data": data})

    for patch in kust.get("patches", []):
        for p in load_yaml_docs(directory / patch["path"]):
            matches = [o for o in objs if o["kind"] == p["kind"]
                       and o["metadata"]["name"] == p["metadata"]["name"]]
            if len(matches) != 1:
                raise ValueError(f"{directory}: patch {patch['path']} for "
                                 f"{p['kind']}/{p['metadata']['name']} matches {len(matches)} objects")
            target = matches[0]
            objs[objs.index(target)] = strategic_merge(target, p)

    ns = kust.get("namespace")
    for o in objs:
        meta = o.setdefault("metadata", {})
        if ns and o["kind"] not in CLUSTER_SCOPED:
            meta["namespace"] = ns
        for lab in kust.get("labels", []):
            if lab.get("includeSelectors") or lab.get("includeTemplates"):
                raise ValueError(f"{kpath}: labels with selectors/templates are not supported here")
            meta.setdefault("labels", {}).update(lab["pairs"])
    return objs


def render_kubectl(directory: Path) -> list[dict] | None:
    kubectl = shutil.which("kubectl")
    if not kubectl:
        return None
    out = subprocess.run([kubectl, "kustomize", str(directory)], check=True,
                         capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def compare(a: list[dict], b: list[dict]) -> list[str]:
    """Differences between two renderings, as messages (empty: equal)."""
    def normalize(objs):
        out = {}
        for o in objs:
            o = copy.deepcopy(o)
            if o.get("kind") == "Secret":  # kustomize wraps long base64 in YAML blocks
                o["data"] = {k: "".join(v.split()) for k, v in o.get("data", {}).items()}
            out[ident(o)] = o
        return out
    na, nb = normalize(a), normalize(b)
    msgs = [f"only kubectl renders {k}" for k in sorted(set(na) - set(nb))]
    msgs += [f"only the small renderer renders {k}" for k in sorted(set(nb) - set(na))]
    msgs += [f"{k} differs between kubectl and the small renderer"
             for k in sorted(set(na) & set(nb)) if na[k] != nb[k]]
    return msgs


# --- schema --------------------------------------------------------------

# Each call of kubernetes_validate.validate reads its schema files anew;
# cache them (the definitions file is several MB) to stay well under a minute.
kv_utils.schema_contents = functools.lru_cache(maxsize=None)(kv_utils.schema_contents)


def check_crd(obj: dict, where: str, fails: Failures) -> bool:
    """Structural check of the custom resources used here; False if unknown."""
    if obj.get("apiVersion") == "monitoring.coreos.com/v1" and obj.get("kind") == "ServiceMonitor":
        spec = obj.get("spec", {})
        if not spec.get("selector", {}).get("matchLabels"):
            fails.add(where, "ServiceMonitor needs spec.selector.matchLabels")
        eps = spec.get("endpoints") or []
        if not eps:
            fails.add(where, "ServiceMonitor needs spec.endpoints")
        for ep in eps:
            cred = ep.get("authorization", {}).get("credentials", {})
            if ep.get("path") != "/metrics" or not cred.get("name") or not cred.get("key"):
                fails.add(where, "ServiceMonitor endpoint needs path /metrics and "
                                 "authorization.credentials (a viewer token Secret)")
            elif cred["name"] not in DOCUMENTED_SECRETS:
                fails.add(where, f"ServiceMonitor references undocumented Secret {cred['name']}")
        return True
    return False


def check_schema(obj: dict, where: str, versions: list[str], fails: Failures) -> str:
    try:
        for v in versions:
            kubernetes_validate.validate(obj, v, strict=True)
        return "schema"
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        fails.add(where, f"schema (k8s {e.version}): {path}: {e.message}")
        return "schema"
    except kubernetes_validate.SchemaNotFoundError:
        if check_crd(obj, where, fails):
            return "crd"
        fails.add(where, f"no schema for {obj.get('apiVersion')} {obj.get('kind')} "
                         "and no structural check in k8s/validate.py")
        return "none"


# --- policy --------------------------------------------------------------

def pod_spec(obj: dict) -> dict | None:
    if obj["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
        return obj.get("spec", {}).get("template", {}).get("spec", {})
    return None


def secret_refs(spec: dict) -> set[str]:
    names = {v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                names.add(ref["name"])
        for ef in c.get("envFrom", []):
            if "secretRef" in ef:
                names.add(ef["secretRef"]["name"])
    return names


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_pod(obj: dict, where: str, fails: Failures) -> None:
    spec = pod_spec(obj)
    psc = spec.get("securityContext", {})
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        fails.add(where, "pod securityContext.seccompProfile.type must be RuntimeDefault")
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        cw = f"{where} container {c.get('name')}"
        sc = c.get("securityContext", {})
        if not (sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True):
            fails.add(cw, "runAsNonRoot must be true")
        if sc.get("runAsUser", psc.get("runAsUser")) != 65532:
            fails.add(cw, "runAsUser must be 65532")
        if sc.get("readOnlyRootFilesystem") is not True:
            fails.add(cw, "readOnlyRootFilesystem must be true")
        if sc.get("allowPrivilegeEscalation") is not False:
            fails.add(cw, "allowPrivilegeEscalation must be false")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            fails.add(cw, "capabilities.drop must contain ALL")
        if sc.get("capabilities", {}).get("add"):
            fails.add(cw, "capabilities.add must be empty")
        res = c.get("resources", {})
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in res.get(kind, {}):
                    fails.add(cw, f"resources.{kind}.{r} missing")
        if obj["kind"] == "Deployment":
            for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
                if c.get(probe, {}).get("httpGet", {}).get("path") != path:
                    fails.add(cw, f"{probe} must be an httpGet of {path}")


def check_policy(objs: list[dict], target: str, expect: dict, fails: Failures) -> None:
    by_kind: dict[str, list[dict]] = {}
    for o in objs:
        by_kind.setdefault(o["kind"], []).append(o)
    deployments = by_kind.get("Deployment", [])
    rendered_cm = {o["metadata"]["name"] for o in by_kind.get("ConfigMap", [])}
    rendered_secrets = {o["metadata"]["name"] for o in by_kind.get("Secret", [])}
    sas = {o["metadata"]["name"]: o for o in by_kind.get("ServiceAccount", [])}
    bound_sas = {s["name"] for rb in by_kind.get("RoleBinding", []) + by_kind.get("ClusterRoleBinding", [])
                 for s in rb.get("subjects", []) if s.get("kind") == "ServiceAccount"}

    if by_kind.get("ClusterRoleBinding") or by_kind.get("ClusterRole"):
        fails.add(target, "no ClusterRole/ClusterRoleBinding: twincert gets Secrets per namespace only")
    for role in by_kind.get("Role", []):
        for rule in role.get("rules", []):
            extra = set(rule.get("verbs", [])) - {"get", "create", "update", "patch"}
            if rule.get("resources") != ["secrets"] or rule.get("apiGroups") != [""] or extra:
                fails.add(f"{target} {ident(role)}", "a Role may only get/create/update/patch secrets")
    if rendered_secrets and target != "overlays/dev":
        fails.add(target, f"Secret objects outside the dev overlay: {sorted(rendered_secrets)}")

    for obj in objs:
        spec = pod_spec(obj)
        if spec is None:
            continue
        where = f"{target} {ident(obj)}"
        check_pod(obj, where, fails)
        for cm in {v["configMap"]["name"] for v in spec.get("volumes", []) if "configMap" in v}:
            if cm not in rendered_cm:
                fails.add(where, f"references ConfigMap {cm}, which is not rendered")
        for s in secret_refs(spec):
            if s not in rendered_secrets and s not in DOCUMENTED_SECRETS:
                fails.add(where, f"references Secret {s}, neither rendered nor documented")
        component = spec and obj["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component")
        if component != "worker" and secret_refs(spec) & WORKER_ONLY_SECRETS:
            fails.add(where, f"only workers may mount {sorted(secret_refs(spec) & WORKER_ONLY_SECRETS)}")
        sa = spec.get("serviceAccountName")
        if sa not in sas:
            fails.add(where, f"serviceAccountName {sa!r} is not rendered")
        elif component != "worker":
            if sa in bound_sas:
                fails.add(where, f"ServiceAccount {sa} has RBAC bindings; only the worker's may")
            if spec.get("automountServiceAccountToken") is not False:
                fails.add(where, "automountServiceAccountToken must be false (no Kubernetes API use)")
        if expect.get("priority_class") and spec.get("priorityClassName") != expect["priority_class"]:
            fails.add(where, f"priorityClassName must be {expect['priority_class']}")

    for d in deployments:
        name = d["metadata"]["name"]
        where = f"{target} {ident(d)}"
        want = expect.get("replicas", {}).get(name)
        if want is not None and d["spec"].get("replicas") != want:
            fails.add(where, f"replicas {d['spec'].get('replicas')!r}, expected {want}")
        tpl_labels = d["spec"]["template"]["metadata"]["labels"]
        if not d["spec"]["template"]["spec"].get("topologySpreadConstraints"):
            fails.add(where, "topologySpreadConstraints missing")
        pdbs = [p for p in by_kind.get("PodDisruptionBudget", [])
                if selects(p["spec"]["selector"].get("matchLabels", {}), tpl_labels)]
        if len(pdbs) != 1:
            fails.add(where, f"{len(pdbs)} PodDisruptionBudgets select it, expected 1")
        elif name in expect.get("min_available", {}) and \
                pdbs[0]["spec"].get("minAvailable") != expect["min_available"][name]:
            fails.add(where, f"PodDisruptionBudget minAvailable {pdbs[0]['spec'].get('minAvailable')}, "
                             f"expected {expect['min_available'][name]}")
    for name in expect.get("replicas", {}):
        if name not in {d["metadata"]["name"] for d in deployments}:
            fails.add(target, f"Deployment {name} missing")

    pod_templates = [o["spec"]["template"] for o in objs if pod_spec(o) is not None]
    for svc in by_kind.get("Service", []):
        sel = svc["spec"].get("selector", {})
        hits = [t for t in pod_templates if selects(sel, t["metadata"].get("labels", {}))]
        where = f"{target} {ident(svc)}"
        if not hits:
            fails.add(where, "selects no pod template")
        for port in svc["spec"]["ports"]:
            tp = port.get("targetPort")
            missing = [t for t in hits if tp not in
                       {p.get(f) for c in t["spec"]["containers"] for p in c.get("ports", [])
                        for f in ("name", "containerPort")}]
            if missing:
                fails.add(where, f"targetPort {tp} is not a port of every selected pod")
        if any(o["kind"] == "Job" and o["spec"]["template"] is t for o in objs for t in hits):
            fails.add(where, "selects the migration Job's pod")
    for np in by_kind.get("NetworkPolicy", []):
        if not any(selects(np["spec"]["podSelector"].get("matchLabels", {}), t["metadata"]["labels"])
                   for t in pod_templates) and np["spec"]["podSelector"] != {}:
            fails.add(f"{target} {ident(np)}", "podSelector selects no pod template")


def check_dashboard(path: Path, fails: Failures) -> int:
    """Returns the number of panels; problems go to fails."""
    import json
    import re
    try:
        dash = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        fails.add(str(path), f"not readable JSON: {e}")
        return 0
    panels = dash.get("panels", [])
    ids = [p.get("id") for p in panels]
    if len(ids) != len(set(ids)):
        fails.add(path.name, "panel ids are not unique")
    if not any(i.get("name") == "DS_PROMETHEUS" for i in dash.get("__inputs", [])):
        fails.add(path.name, "no DS_PROMETHEUS datasource input")
    for p in panels:
        for t in p.get("targets", []):
            if t.get("datasource", {}).get("uid") != "${DS_PROMETHEUS}" or \
                    not re.search(r"\btwincert_[a-z0-9_]+", t.get("expr", "")):
                fails.add(path.name, f"panel {p.get('title')!r}: query {t.get('expr')!r} "
                                     "is not on a twincert_* metric through ${DS_PROMETHEUS}")
    return len(panels)


# --- main ----------------------------------------------------------------

def main() -> int:
    versions = os.environ.get("K8S_VERSIONS", "1.30.0 1.34.0").split()
    fails = Failures()
    kubectl = shutil.which("kubectl")
    print(f"k8s-validate: kubernetes-validate {kubernetes_validate.__version__}, "
          f"schemas for Kubernetes {', '.join(versions)} (strict); "
          f"renderer: {'kubectl kustomize + ' if kubectl else ''}k8s/validate.py")
    rows = []
    sets: list[tuple[str, list[dict], dict]] = []
    for target, expect in TARGETS.items():
        directory = K8S / target
        try:
            mine = render_py(directory)
        except (ValueError, KeyError, OSError, yaml.YAMLError) as e:
            fails.add(target, f"small renderer: {e}")
            mine = []
        try:
            theirs = render_kubectl(directory)
        except subprocess.CalledProcessError as e:
            fails.add(target, f"kubectl kustomize failed: {e.stderr.strip()}")
            theirs = None
        if theirs is not None and mine:
            for msg in compare(theirs, mine):
                fails.add(target, msg)
        sets.append((target, theirs if theirs is not None else mine, expect))
    for d in PLAIN_DIRS:
        for f in sorted((K8S / d).glob("*.yaml")):
            sets.append((f"{d}/{f.name}", load_yaml_docs(f), {}))

    for target, objs, expect in sets:
        counts = {"schema": 0, "crd": 0, "none": 0}
        before = len(fails.items)
        for o in objs:
            counts[check_schema(o, f"{target} {ident(o)}", versions, fails)] += 1
        if not target.startswith("examples/"):
            check_policy(objs, target, expect, fails)
        else:
            for o in objs:
                if o["kind"] == "Role":
                    check_policy([o], target, {}, fails)
        rows.append((target, len(objs), counts["schema"], counts["crd"], len(fails.items) - before))

    before = len(fails.items)
    n_panels = check_dashboard(DASHBOARD, fails)
    rows.append(("docs/grafana-dashboard.json (panels)", n_panels, 0, 0, len(fails.items) - before))

    print(f"{'target':<40} {'objects':>7} {'schema':>7} {'crd':>4} {'problems':>8}")
    for target, n, s, c, p in rows:
        print(f"{target:<40} {n:>7} {s:>7} {c:>4} {p:>8}")
    total = sum(r[1] for r in rows[:-1])
    if fails.items:
        print(f"\n{len(fails.items)} problem(s):")
        for item in fails.items:
            print(f"  FAIL {item}")
        print(f"\nk8s-validate: FAILED ({total} objects, {len(fails.items)} problems)")
        return 1
    print(f"\nk8s-validate: OK ({total} objects: schemas, policy checks"
          f"{', kubectl and the small renderer agree' if kubectl else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
