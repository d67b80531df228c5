"""MLflow tracking, on by default (MONAI's MLFlowHandler, a local SQLite store beside TensorBoard's files)."""

from pathlib import Path
from tempfile import TemporaryDirectory

import mlflow
import pytest
from monai.utils import path_to_sqlite_uri

from tests.helpers import TINY_NETWORK, TinyDatasetTestCase, run_workflow, tiny_checkpoint
from tests.test_train_workflow import train

pytestmark = pytest.mark.slow  # whole workflows or subprocesses: `make test-fast` leaves them out


def logged_runs(output_dir: Path) -> tuple[mlflow.MlflowClient, dict]:
    """The client of ``<output_dir>/mlruns.db`` and ``{experiment name: [runs]}``."""
    client = mlflow.MlflowClient(path_to_sqlite_uri(str(output_dir / "mlruns.db")))
    return client, {e.name: client.search_runs([e.experiment_id]) for e in client.search_experiments()}


def artifact_names(client: mlflow.MlflowClient, run) -> set:
    return {a.path for a in client.list_artifacts(run.info.run_id)}


class TestMLflowTracking(TinyDatasetTestCase):
    def test_training_election_and_evaluation_are_tracked_by_default(self):
        with TemporaryDirectory() as tmp:
            work = Path(tmp)
            # model.pt = the last epoch's weights, those of the election: elect.json then re-elects the same teachers
            train(
                self.dataset,
                work,
                mlflow=True,
                max_epochs=2,
                val_interval=1,
                elect_epoch=2,
                ckd_weight=0.2,
                select_model="last",
            )
            after_training = {
                "dataset_dir": str(self.dataset),
                "ckpt_path": str(work / "models" / "model.pt"),
                "metadata_file": str(work / "metadata.json"),
                "output_dir": str(work / "eval"),
                **TINY_NETWORK,
                "mlflow": True,
            }
            run_workflow(["train.json", "elect.json"], resamples=0, **after_training)
            run_workflow(["train.json", "evaluate.json"], hd95=False, **after_training)
            client, experiments = logged_runs(work / "eval")
            self.assertEqual(
                {name: len(runs) for name, runs in experiments.items() if runs},
                {"lckd_train": 1, "lckd_elect": 1, "lckd_evaluate": 1},
            )

            (trained,) = experiments["lckd_train"]
            self.assertEqual(trained.info.status, "FINISHED")
            self.assertEqual(trained.data.params["ckd_weight"], "0.2")
            self.assertEqual(trained.data.params["modalities"], "['flair', 't1', 't1ce', 't2']")
            for key in (
                "loss",
                "seg_loss",
                "ckd_loss",
                "val_mean_dice",
                "val_dice_et",
                "val_dice_tc",
                "val_dice_wt",
                "val_combinations_dice",
                "election_dice_WT_flair",
            ):
                self.assertIn(key, trained.data.metrics)
            history = client.get_metric_history(trained.info.run_id, "election_dice_ET_t1ce")
            self.assertEqual([m.step for m in history], [2])  # logged at the election epoch only
            self.assertEqual([m.step for m in client.get_metric_history(trained.info.run_id, "val_dice_wt")], [1, 2])
            self.assertRegex(trained.data.tags["teachers"], r"^ET->\w+, TC->\w+, WT->\w+$")
            self.assertIn("metadata.json", artifact_names(client, trained))

            (elected,) = experiments["lckd_elect"]
            self.assertEqual(elected.data.tags["teachers"], trained.data.tags["teachers"])  # same weights, same data
            self.assertEqual(
                {k for k in elected.data.metrics if k.startswith("election_dice_")},
                {f"election_dice_{r}_{m}" for r in ("ET", "TC", "WT") for m in ("flair", "t1", "t1ce", "t2")},
            )
            self.assertIn("metadata.json", artifact_names(client, elected))

            (evaluated,) = experiments["lckd_evaluate"]
            self.assertEqual(evaluated.data.params["teachers"], trained.data.tags["teachers"])
            self.assertIn("dice_WT_average", evaluated.data.metrics)
            self.assertIn("dice_ET_flair_t1ce", evaluated.data.metrics)
            self.assertTrue(
                {"summary.md", "combinations.csv", "combinations.png", "metadata.json"}
                <= artifact_names(client, evaluated)
            )
            # TensorBoard's event files sit beside the MLflow store
            self.assertTrue(list((work / "eval").glob("events.out.tfevents.*")))

    def test_switched_off_with_one_key(self):
        with TemporaryDirectory() as tmp:
            work = Path(tmp)
            tiny_checkpoint(work / "model.pt")
            run_workflow(
                ["train.json", "evaluate.json"],
                dataset_dir=str(self.dataset),
                ckpt_path=str(work / "model.pt"),
                output_dir=str(work / "eval"),
                hd95=False,
                **{**TINY_NETWORK, "mlflow": False},
            )
            self.assertTrue((work / "eval" / "report" / "summary.md").is_file())
            self.assertFalse((work / "eval" / "mlruns.db").exists())
