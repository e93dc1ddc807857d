"""Flow `detect`: scan a corpus → measure what the production model memorised → write a `redact`
request; and `leak_pipeline`, which chains it with `forget`."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import yaml
from prefect.runtime import flow_run

from flows.forget import forget_flow
from flows.runs import flow
from tasks import dvc, tracking
from tasks.common import Lineage
from tasks.kinds import text as text_kind


@flow(name="detect", log_prints=False, validate_parameters=True)
def detect_flow(root: str, dataset: str, model: str | None = None, policy: str = "token") -> dict:
    """Scan `dataset`, measure each finding's exposure in `model` (production version), and write a
    request that redacts every finding. Returns counts, exposures (masked) and the request path."""
    root_path = Path(root)
    name = model or dataset
    experiment = tracking.configure(root_path)
    tags = {"data_version": dvc.data_version(root_path), "dataset": dataset, "model": name,
            "git_commit": tracking.git_commit(root_path), "prefect_flow_run": flow_run.id}
    with tracking.run(experiment, f"detect {dataset}", {**tags, "flow": "detect"}) as parent:
        lineage = Lineage(root_path, experiment, parent, tags)
        corpus, findings = text_kind.scan_dataset(lineage, dataset)
        exposures = text_kind.measure_exposure(lineage, name, corpus, findings) if findings else []
        request_path = write_redact_request(root_path, name, findings, policy) if findings else None
        summary = {"dataset": dataset, "model": name, "findings": text_kind.counts(findings),
                   "secrets": exposures, "request": str(request_path) if request_path else None,
                   "run_id": parent}
        tracking.log_json(parent, summary, "detect.json")
    return summary


def write_redact_request(root: Path, model: str, findings: list[dict], policy: str) -> Path:
    """A `redact` request naming the findings by fingerprint (never by value)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    request = {"id": f"DETECT-{stamp}", "model": model,
               "redact": {"findings": sorted({f["fingerprint"] for f in findings}), "policy": policy},
               "method": "auto"}
    path = root / ".unlearn" / "requests" / f"{request['id']}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(request, sort_keys=False))
    return path


@flow(name="leak-pipeline", log_prints=False)
def leak_pipeline(root: str, dataset: str, model: str | None = None, method: str | None = None,
                  options: dict | None = None) -> dict:
    """detect → forget: find what leaked, measure it, remove it, verify, promote, purge."""
    detected = detect_flow(root=root, dataset=dataset, model=model)
    if detected["request"] is None:
        return {"detect": detected, "forget": None, "verified": True}
    forgot = forget_flow(root=root, request_path=detected["request"], method=method, options=options)
    return {"detect": detected, "forget": forgot, "verified": forgot["verified"]}
