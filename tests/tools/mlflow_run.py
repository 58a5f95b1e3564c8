"""Print what an MLflow tracking store holds of one run, as JSON, for the
tests of scx_phase.mlflow: the store's runs, and the run's status, name,
tags, latest metrics and the history of every scx_phase metric.

    mlflow_run.py RUN_ID      (the store: $MLFLOW_TRACKING_URI)
    mlflow_run.py -           the run id from the first line of stdin, read
                              once MLflow is imported: a test starts this
                              beside the run, and importing MLflow under
                              the VM's TCG (about 33 s) overlaps it
"""

import json
import sys

from mlflow import MlflowClient


def main():
    run_id = sys.argv[1]
    if run_id == "-":
        run_id = sys.stdin.readline().strip()
    c = MlflowClient()
    run = c.get_run(run_id)
    runs = [r.info.run_id for e in c.search_experiments()
            for r in c.search_runs([e.experiment_id])]
    history = {k: [[m.step, m.value] for m in c.get_metric_history(run.info.run_id, k)]
               for k in run.data.metrics if k.startswith("scx_phase.")}
    print(json.dumps({"runs": runs, "status": run.info.status, "name": run.info.run_name,
                      "tags": run.data.tags, "metrics": run.data.metrics,
                      "history": history}))


if __name__ == "__main__":
    main()
