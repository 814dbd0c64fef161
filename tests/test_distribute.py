"""Training on several workers: how each worker's share of the data is chosen (in process), then two training
workers on this machine (MultiWorkerMirroredStrategy over 127.0.0.1): one run folder, written by the chief
only, and a resumed run on both workers.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tensorflow as tf

from segkit import data
from segkit.training import splits
from segkit.config import TrainConfig
from segkit.data.common import shard_files

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 240  # seconds for both workers together; a hung collective must fail the test, not stall it
TINY = ["--strategy", "multiworker", "--model", "mobilenetv2_pix2pix", "--alpha", "0.35",
        "--image-size", "64", "64", "--val-image-size", "64", "64", "--batch-size", "2", "--steps-per-epoch", "3",
        "--precision", "float32", "--num-samples", "1"]


def images_of(ds):
    return [image.tobytes() for image, _ in ds.as_numpy_iterator()]


def test_shard_files_splits_the_file_list_before_decoding(trees):
    root = trees.camvid_segnet()  # test split: 3 images, each different
    everything, info = data.load_dataset("camvid", root, "test")
    every_image = images_of(everything)
    shares = []
    for index in range(2):
        with shard_files(2, index) as sharded:
            part, part_info = data.load_dataset("camvid", root, "test")
        assert sharded == [3]  # one dataset sharded, of 3 pairs
        assert part_info.files == info.files  # info still lists every file
        shares.append(images_of(part))
    assert shares == [[every_image[0], every_image[2]], [every_image[1]]]
    assert images_of(data.load_dataset("camvid", root, "test")[0]) == every_image  # only inside the block


def test_shard_files_leaves_too_few_files_and_generated_data_alone(trees):
    root = trees.camvid_segnet()
    with shard_files(2, 1) as sharded:
        val, _ = data.load_dataset("camvid", root, "val")  # one file for two workers
        shapes, _ = data.load_dataset("shapes", count=5)
    assert sharded == []
    assert len(images_of(val)) == 1 and len(images_of(shapes)) == 5
    with pytest.raises(ValueError, match=r"shard index must be in \[0, 2\), got 2"):
        with shard_files(2, 2):
            pass


def test_worker_share(trees):
    root = trees.camvid_segnet()
    config = TrainConfig(dataset="camvid", data_dir=str(root))
    second = {"num_workers": 2, "rank": 1}
    raw, _ = data.load_dataset("camvid", root, "test")
    part, how = splits.worker_share(config, second, "test", raw)
    assert how == "files" and len(images_of(part)) == 1
    assert splits.worker_share(config, second, "test", raw, min_examples=2) == (raw, "data")  # 1 file < 2
    assert splits.worker_share(config, {"num_workers": 1, "rank": 0}, "test", raw) == (raw, "none")
    shapes_config = TrainConfig(dataset="shapes")
    shapes, _ = data.load_dataset("shapes")
    assert splits.worker_share(shapes_config, second, "train", shapes) == (shapes, "data")
    policies = {how: splits.with_shard_policy(raw, how).options().experimental_distribute.auto_shard_policy
                for how in ("files", "data")}
    assert policies == {"files": tf.data.experimental.AutoShardPolicy.OFF,
                        "data": tf.data.experimental.AutoShardPolicy.DATA}


def free_ports(count):
    """Ports the OS reports free on 127.0.0.1 (bound to port 0, then released)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def run_workers(args, tmp_path, count=2):
    """Run train.py `args` as `count` workers of one cluster; returns [(returncode, output)] by worker index."""
    ports = free_ports(count)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    try:
        for index in range(count):
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
                   "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
                   # Each worker's own temporary folder, to check that it is the only other place written.
                   "TMPDIR": str(tmp_path / f"tmp{index}")}
            (tmp_path / f"tmp{index}").mkdir(exist_ok=True)
            log = open(tmp_path / f"worker{index}.log", "w")
            procs.append((subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT, env=env, stdout=log,
                                           stderr=subprocess.STDOUT), log))
        deadline = time.monotonic() + TIMEOUT
        for proc, _ in procs:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    return [(proc.returncode, (tmp_path / f"worker{i}.log").read_text()) for i, (proc, _) in enumerate(procs)]


def files_under(folder: Path) -> set:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def two_worker_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multiworker")
    run_dir = tmp / "run"
    results = run_workers([*TINY, "--dataset", "shapes", "--epochs", "1", "--run-dir", str(run_dir)], tmp)
    for index, (code, output) in enumerate(results):
        assert code == 0, f"worker {index} exited with {code}:\n{output[-3000:]}"
    return tmp, run_dir, results


def test_chief_writes_the_run_folder(two_worker_run):
    tmp, run_dir, results = two_worker_run
    config = json.loads((run_dir / "config.json").read_text())
    assert config["workers"] == 2
    assert config["replicas"] == 2  # one CPU replica per worker
    assert config["data_sharding"] == "data"  # shapes has no files to split
    assert (run_dir / "model.keras").is_file()
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["epoch_001.keras"]
    rows = (run_dir / "history.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("1,")
    assert "2 replica(s) on 2 worker(s)" in results[0][1]


def test_other_worker_writes_nothing(two_worker_run):
    tmp, run_dir, results = two_worker_run
    # Everything in the run folder is the chief's: the same set of files as a one-epoch run writes.
    expected = {"config.json", "history.csv", "model.keras", "checkpoints/epoch_001.keras", "curves.png",
                "samples/epoch_001.png"}
    written = files_under(run_dir)
    assert expected <= written
    assert {f for f in written - expected if not f.startswith("logs/")} == set()
    assert not list(run_dir.rglob(".tmp*"))
    # The non-chief saved the model and checkpoint too (saving is collective), into temporary folders it removed.
    assert files_under(tmp / "tmp1") == set()


# A second two-worker run: about as long again as the first.
def test_resume_on_both_workers(two_worker_run):
    tmp, run_dir, _ = two_worker_run
    results = run_workers(["--resume", "--epochs", "2", "--run-dir", str(run_dir)], tmp)
    for index, (code, output) in enumerate(results):
        assert code == 0, f"worker {index} exited with {code}:\n{output[-3000:]}"
        assert f"resuming {run_dir} from epoch 1" in output
    rows = (run_dir / "history.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2"]
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["epoch_002.keras"]


# A third two-worker run.
def test_two_workers_read_their_own_files(tmp_path):
    from tests.conftest import write_camvid_layout

    camvid = write_camvid_layout(tmp_path / "camvid", splits=(("train", 8), ("val", 3)))
    args = [*TINY, "--dataset", "camvid", "--data-dir", str(camvid), "--epochs", "1",
            "--run-dir", str(tmp_path / "run")]
    for index, (code, output) in enumerate(run_workers(args, tmp_path)):
        assert code == 0, f"worker {index} exited with {code}:\n{output[-3000:]}"
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    # 8 training files: 4 per worker, one global batch (2 x 2) each; 3 val files: 2 and 1.
    assert (config["data_sharding"], config["val_data_sharding"]) == ("files", "files")
    assert config["num_train_images"] == 8
