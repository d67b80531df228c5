"""`--tracking mlflow` (MONAI's MLFlowHandler, local SQLite store) records elections and evaluations."""

from pathlib import Path
from tempfile import TemporaryDirectory

import mlflow
from monai.utils import path_to_sqlite_uri

from tests.conftest import TINY_NETWORK, TinyDatasetTestCase, run_workflow, tiny_checkpoint
from tests.test_train_workflow import train


def logged_runs(output_dir: Path) -> list:
    client = mlflow.MlflowClient(path_to_sqlite_uri(str(output_dir / "mlruns.db")))
    runs = []
    for experiment in client.search_experiments():
        runs += client.search_runs([experiment.experiment_id])
    return client, runs


class TestMLflowTracking(TinyDatasetTestCase):
    def test_training_logs_validation_and_election(self):
        with TemporaryDirectory() as tmp:
            work = Path(tmp)
            train(self.dataset, work, tracking="mlflow", max_epochs=2, val_interval=1, elect_epoch=1)
            client, runs = logged_runs(work / "eval")
            metrics = set().union(*(run.data.metrics for run in runs))
            for key in ("train_loss", "val_mean_dice", "val_dice_et", "val_dice_wt", "election_dice_WT_flair"):
                self.assertIn(key, metrics)
            history = client.get_metric_history(runs[0].info.run_id, "election_dice_ET_t1ce")
            self.assertEqual([m.step for m in history], [1])  # logged at the election epoch only

    def test_evaluation_logs_summary_and_reports(self):
        with TemporaryDirectory() as tmp:
            work = Path(tmp)
            tiny_checkpoint(work / "model.pt")
            run_workflow(
                "evaluate.json",
                tracking="mlflow",
                dataset_dir=str(self.dataset),
                ckpt_path=str(work / "model.pt"),
                output_dir=str(work / "eval"),
                hd95=False,
                **TINY_NETWORK,
            )
            client, runs = logged_runs(work / "eval")
            self.assertEqual(len(runs), 1)
            self.assertIn("dice_WT_average", runs[0].data.metrics)
            self.assertIn("dice_ET_flair_t1ce", runs[0].data.metrics)
            artifacts = {a.path for a in client.list_artifacts(runs[0].info.run_id)}
            self.assertTrue({"summary.md", "combinations.csv", "combinations.png"} <= artifacts, artifacts)
