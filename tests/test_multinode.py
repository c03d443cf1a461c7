"""Training over several machines (torchrun's static rendezvous), tested as two "nodes" on this machine: two
launches of `python -m lora_demo train --nnodes 2 --node-rank R` with gloo, each with its own runs folder as two
machines without a shared disk would have.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from lora_demo.errors import InputError
from lora_demo.train.runner import Runner, worker_command
from lora_demo.train.runs import read_progress, read_status
from lora_demo.train.settings import TrainSettings

COMMON = dict(
    model="qwen3-tiny",
    dataset="example:persona",
    max_seq_length=128,
    gradient_accumulation_steps=1,
    max_steps=4,
    val_fraction=0.0,
    learning_rate=5e-3,
    warmup=0,
    seed=3407,
)
FLAGS = [
    "--model",
    "qwen3-tiny",
    "--dataset",
    "example:persona",
    "--max-seq-length",
    "128",
    "--gradient-accumulation-steps",
    "1",
    "--val-fraction",
    "0",
    "--learning-rate",
    "5e-3",
    "--warmup",
    "0",
    "--seed",
    "3407",
    "--micro-batch-size",
    "2",
    "--nnodes",
    "2",
    "--master-addr",
    "127.0.0.1",
    "--run-name",
    "mn",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def losses(run_dir) -> list[float]:
    return [p["loss"] for p in read_progress(run_dir) if p.get("type") == "log" and "loss" in p]


def launch(tmp_path: Path, rank: int, port: int, steps: int) -> subprocess.Popen:
    """One machine's command, as README gives it; its own runs folder and its own session (a kill of its group is
    that machine going away)."""
    cmd = [
        sys.executable,
        "-m",
        "lora_demo",
        "train",
        *FLAGS,
        "--master-port",
        str(port),
        "--max-steps",
        str(steps),
        "--node-rank",
        str(rank),
        "--runs-dir",
        str(tmp_path / f"node{rank}"),
    ]
    out = open(tmp_path / f"node{rank}.out", "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        cmd,
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_the_command_line_names_torchrun_s_static_rendezvous():
    s = TrainSettings(
        **COMMON, num_nodes=2, node_rank=1, master_addr="node0.cluster", master_port=29511, num_processes=2
    )
    cmd = worker_command(Path("runs/x"), s)
    assert cmd[1:3] == ["-m", "torch.distributed.run"]
    assert {
        "--nnodes=2",
        "--node-rank=1",
        "--master-addr=node0.cluster",
        "--master-port=29511",
        "--nproc-per-node=2",
        "--max-restarts=0",
    } <= set(cmd) and "--standalone" not in cmd
    assert s.world_size == 4
    from lora_demo.train.plan import optimizer_steps

    assert (
        optimizer_steps(
            44,
            TrainSettings(
                **{**COMMON, "max_steps": -1, "num_epochs": 1}, num_nodes=2, master_addr="h", micro_batch_size=2
            ),
        )["steps_per_epoch"]
        == 11
    )


@pytest.mark.parametrize(
    "kw, why",
    [
        (dict(num_nodes=2), "master_addr is needed with 2 nodes"),
        (dict(num_nodes=2, node_rank=2, master_addr="h"), "node_rank must be below num_nodes \\(2\\): 0 to 1"),
        (dict(master_addr="node 0"), "master_addr must be a host name or address without spaces"),
        (dict(num_nodes=0), "num_nodes must be ≥ 1"),
        (dict(master_port=70000), "master_port must be ≤ 65535"),
    ],
)
def test_bad_node_settings_say_what_to_fix(kw, why):
    with pytest.raises(InputError, match=why):
        TrainSettings(**COMMON, **kw)


@pytest.mark.slow
def test_two_nodes_match_one_process_with_the_same_effective_batch(tmp_path):
    runner = Runner(tmp_path / "runs", tmp_path / "data")
    one = runner.start(TrainSettings(**COMMON, micro_batch_size=4, run_name="one"))
    assert runner.wait(300)["status"] == "completed"
    port = free_port()
    nodes = [launch(tmp_path, 1, port, 4), launch(tmp_path, 0, port, 4)]
    codes = [p.wait(300) for p in nodes]
    out = [(tmp_path / f"node{r}.out").read_text() for r in (0, 1)]
    assert codes == [0, 0], out
    lead, other = tmp_path / "node0" / "mn", tmp_path / "node1" / "mn-node1"
    st = read_status(lead)
    assert st["status"] == "completed" and st["num_processes"] == 2 and st["num_nodes"] == 2
    assert losses(lead) == pytest.approx(losses(one), rel=1e-3) and len(losses(lead)) == 4
    assert (lead / "adapter_model.safetensors").is_file()
    # The other machine keeps its log and how its part ended; node 0 alone writes the adapter and the curve.
    st1 = read_status(other)
    assert st1["status"] == "completed" and st1["node_rank"] == 1 and st1["step"] == 4
    assert (other / "train.log").is_file() and not (other / "adapter_model.safetensors").exists()
    assert not (other / "progress.jsonl").exists()
    assert "node 1 of 2 ended its part at step 4; node 0 saved the adapter" in out[1]
    from lora_demo.train.runs import update_status

    update_status(lead, status="stopped")  # (a stopped multi-node run: resuming it on one machine cannot work)
    with pytest.raises(InputError, match="trained on 2 machines: a run over several machines does not resume"):
        Runner(tmp_path / "node0").resume(lead)


@pytest.mark.slow
def test_a_lost_node_fails_the_run_on_node_0_and_leaves_no_rank_running(tmp_path):
    port = free_port()
    nodes = [launch(tmp_path, 0, port, 5000), launch(tmp_path, 1, port, 5000)]
    lead = tmp_path / "node0" / "mn"
    deadline = time.time() + 240
    while (read_status(lead).get("step") or 0) < 1 and time.time() < deadline:
        time.sleep(0.5)
    assert read_status(lead).get("status") == "training", (tmp_path / "node0.out").read_text()[-2000:]
    ranks = [p for n in nodes for p in psutil.Process(n.pid).children(recursive=True)]
    os.killpg(nodes[1].pid, signal.SIGKILL)  # machine 1 goes away: its command, torchrun and its rank
    assert nodes[0].wait(180) != 0
    st = read_status(lead)
    assert st["status"] == "failed", st
    assert "on another machine ended or could not be reached" in st["error"], st["error"]
    assert "another machine ended" in (tmp_path / "node0.out").read_text()

    def alive():
        return [" ".join(p.cmdline()) for p in ranks if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]

    deadline = time.time() + 60  # the killed machine's rank sees its owner gone in 0.5 s; torchrun then ends
    while alive() and time.time() < deadline:
        time.sleep(0.5)
    assert not alive()


@pytest.mark.slow
def test_a_stop_on_node_0_stops_every_machine_and_saves_the_adapter(tmp_path):
    from lora_demo.train.runs import request_stop

    port = free_port()
    nodes = [launch(tmp_path, 0, port, 5000), launch(tmp_path, 1, port, 5000)]
    lead, other = tmp_path / "node0" / "mn", tmp_path / "node1" / "mn-node1"
    deadline = time.time() + 240
    while (read_status(lead).get("step") or 0) < 2 and time.time() < deadline:
        time.sleep(0.3)
    request_stop(lead)  # what the Train tab's Stop and `python -m lora_demo stop` do, on node 0 only
    assert [p.wait(180) for p in nodes] == [3, 3]  # 3: stopped, not failed
    st, st1 = read_status(lead), read_status(other)
    assert st["status"] == "stopped" and (lead / "adapter_model.safetensors").is_file(), st
    assert st1["status"] == "stopped" and st1["step"] == st["step"], st1


def test_fsdp_on_the_cpu_is_refused_before_anything_starts(tmp_path):
    runner = Runner(tmp_path / "runs", tmp_path / "data")
    with pytest.raises(InputError, match="FSDP shards the model over GPUs, and this machine has none"):
        runner.start(TrainSettings(**COMMON, micro_batch_size=2, num_processes=2, fsdp=True))
    assert not list((tmp_path / "runs").glob("*/status.json"))
    from lora_demo.train.plan import plan_run

    errors = plan_run(TrainSettings(**COMMON, num_processes=2, fsdp=True))["errors"]
    assert any("FSDP shards the model" in str(e) for e in errors)


def test_fsdp_settings_become_accelerate_s_fsdp2_plugin(monkeypatch, tmp_path):
    """What the worker hands transformers for FSDP: version 2, one shard unit per decoder layer, a full state dict
    for the saved adapter; accelerate's plugin is built from it (the GPU run itself waits for a multi-GPU machine)."""
    from accelerate.utils import FullyShardedDataParallelPlugin
    from peft import get_peft_model

    from lora_demo.models import load_model
    from lora_demo.train import worker
    from lora_demo.train.lora_config import lora_config

    s = TrainSettings(**COMMON, micro_batch_size=2, num_processes=2, fsdp=True)
    model = get_peft_model(load_model("qwen3-tiny", dtype="fp32", device="cpu").model, lora_config(s))
    monkeypatch.setattr(worker, "WORLD", 2)
    plan = type("Plan", (), {"device": "cuda", "precision": "fp32"})()
    args = worker.fsdp_args(s, plan, model)
    assert args["fsdp"] is True and args["gradient_checkpointing"] is False
    assert args["fsdp_config"]["transformer_layer_cls_to_wrap"] == ["Qwen3DecoderLayer"]
    from trl import SFTConfig

    cfg = SFTConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", **args)
    plugin = FullyShardedDataParallelPlugin(**cfg.fsdp_plugin_args)
    assert plugin.fsdp_version == 2 and plugin.activation_checkpointing
    assert "Qwen3DecoderLayer" in str(cfg.fsdp_plugin_args["transformer_cls_names_to_wrap"])
    monkeypatch.setattr(worker, "WORLD", 1)
    assert worker.fsdp_args(s, plan, model) == {}  # one process: nothing to shard over


def test_the_plan_says_when_a_model_does_not_fit_one_gpu_and_fsdp_would(monkeypatch):
    import torch

    from lora_demo.train.plan import estimate_memory_gb, fit_problems

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: type("P", (), {"total_memory": 80 * 2**30}))
    ddp = TrainSettings(**COMMON, num_processes=4)
    assert "Turn on FSDP (fsdp: true) to shard it over the 4 processes" in str(fit_problems(ddp, 120.0, "cuda")[0])
    assert fit_problems(ddp, 40.0, "cuda") == []
    p = {
        "base_params": 32e9,
        "embedding_params": 1e9,
        "trainable_params": 1e8,
        "hidden_size": 5120,
        "num_layers": 64,
        "intermediate_size": 25600,
        "vocab_size": 152064,
    }
    whole = estimate_memory_gb(p, ddp, "bf16", "cuda", "transformers")
    sharded = estimate_memory_gb(p, TrainSettings(**COMMON, num_processes=4, fsdp=True), "bf16", "cuda", "transformers")
    assert whole > 60 and sharded < whole - 40  # a 32B base: 64 GB of bf16 weights, a quarter each


@pytest.mark.slow
def test_the_slurm_recipe_trains_over_two_nodes(tmp_path):
    """examples/slurm-multinode.sh as sbatch would run it, with `srun` and `scontrol` stand-ins that start its
    command once per node on this machine (SLURM_NODEID 0 and 1), as Slurm does on two hosts."""
    import yaml

    root = Path(__file__).resolve().parents[1]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/bash\necho 127.0.0.1\necho 127.0.0.2\n")
    (bin_dir / "srun").write_text(
        "#!/bin/bash\nwhile [[ $1 == --* ]]; do shift; done\npids=()\n"
        'for n in $(seq 0 $((SLURM_NNODES - 1))); do SLURM_NODEID=$n "$@" > "node$n.out" 2>&1 & pids+=($!); done\n'
        'rc=0; for p in "${pids[@]}"; do wait $p || rc=$?; done; exit $rc\n'
    )
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**COMMON, "micro_batch_size": 2, "max_steps": 3}))
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SLURM_JOB_NODELIST": "n[1-2]",
        "SLURM_NNODES": "2",
        "SLURM_JOB_ID": "77",
        "MASTER_PORT": str(free_port()),
        "PYTHON": sys.executable,
        "PYTHONPATH": str(root),
    }
    done = subprocess.run(
        ["bash", str(root / "examples" / "slurm-multinode.sh"), str(config)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    logs = [p.read_text() for p in sorted(tmp_path.glob("node*.out"))]
    assert done.returncode == 0, (done.stdout, done.stderr, logs)
    st = read_status(tmp_path / "runs" / "slurm-77")
    assert st["status"] == "completed" and st["num_nodes"] == 2 and st["step"] == 3, st
    assert read_status(tmp_path / "runs" / "slurm-77-node1")["status"] == "completed"


def test_a_run_of_another_machine_on_a_shared_disk_is_not_judged_by_this_machine_s_pids(tmp_path):
    """On a shared disk node 0's app or CLI sees node 1's folder; a pid of node 1 means nothing on node 0, so
    the run must not be marked failed (nor block node 0's own part of the same run)."""
    from lora_demo.train.runs import reconcile_runs, settled, this_host, update_status

    other = tmp_path / "runs" / "mn-node1"
    other.mkdir(parents=True)
    update_status(
        other, status="training", pid=2**22 + 7, pid_start="x:1", host=this_host() + "-elsewhere", job="h:1/mn"
    )
    assert settled(other, read_status(other))["status"] == "training"
    assert reconcile_runs(tmp_path / "runs") == []
    Runner(tmp_path / "runs")._refuse_if_active(job="h:1/mn")  # its own run's other part: no refusal
    Runner(tmp_path / "runs")._refuse_if_active()  # another host's run never blocks this host (its GPUs are its own)
    update_status(other, host=this_host(), pid=os.getpid(), pid_start=None)  # a run of this host, alive
    Runner(tmp_path / "runs")._refuse_if_active(job="h:1/mn")  # the same job's part on this host: no refusal
    with pytest.raises(InputError, match="A training run is in progress: mn-node1"):
        Runner(tmp_path / "runs")._refuse_if_active(job="h:2/other")
    update_status(other, pid=2**22 + 7, pid_start="x:1")  # the same pid on this machine: gone, so failed
    assert settled(other, read_status(other))["status"] == "failed"


def test_the_plan_gives_the_command_the_other_machines_run_and_it_means_the_same_settings():
    import shlex

    from lora_demo.train.cli import _settings_from
    from lora_demo.train.plan import plan_run
    from lora_demo.train.settings import defaults_for, settings_command

    s = TrainSettings(
        **COMMON,
        micro_batch_size=2,
        num_nodes=2,
        master_addr="node0",
        run_name="mn x",
        target_modules=["q_proj", "v_proj"],
    )
    notes = " ".join(str(n) for n in plan_run(s, [])["notes"])
    assert "On machine R: python -m lora_demo train" in notes and "--node-rank R" in notes
    from lora_demo.cli import build_parser

    for device in ("cpu", "cuda"):  # whichever defaults the other machine starts from, it trains these settings
        argv = shlex.split(settings_command(s, node_rank=1))
        assert argv[:4] == ["python", "-m", "lora_demo", "train"]
        args = build_parser().parse_args(argv[3:])
        import lora_demo.device as device_mod

        real, fake = device_mod.detect, type("D", (), {"device": device})()
        try:
            device_mod.detect = lambda *a, fake=fake, **k: fake
            got = _settings_from(args)
        finally:
            device_mod.detect = real
        assert got.to_dict() == {**s.to_dict(), "node_rank": 1}, device
    assert defaults_for("cpu").val_fraction != s.val_fraction  # (the case a flag-less command would get wrong)


def test_only_a_distributed_error_reads_as_a_lost_peer():
    from lora_demo.train.worker import _peer_lost

    assert _peer_lost(RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer"))
    assert not _peer_lost(OSError("HTTPSConnectionPool(host='huggingface.co'): Read timed out."))
    assert not _peer_lost(ConnectionRefusedError("mlflow server: connection refused"))


def test_fsdp_with_a_4bit_base_is_refused():
    from lora_demo.train.plan import process_problems

    assert "FSDP with a 4-bit base (QLoRA) is not supported yet" in str(process_problems(2, "cuda", True, True)[0])


def test_a_foreign_run_that_went_silent_for_an_hour_reads_as_failed(tmp_path):
    from lora_demo.train.runs import settled, this_host, update_status

    other = tmp_path / "mn-node1"
    other.mkdir()
    update_status(other, status="training", pid=7, host=this_host() + "-elsewhere")
    old = time.time() - 2 * 3600
    os.utime(other / "status.json", (old, old))
    shown = settled(other, read_status(other))
    assert shown["status"] == "failed" and "No sign of life from" in str(shown["error"])


@pytest.mark.slow
def test_machines_started_with_other_settings_fail_the_run_before_the_first_step(tmp_path):
    port = free_port()
    cmd = [sys.executable, "-m", "lora_demo", "train", *FLAGS, "--master-port", str(port), "--max-steps", "4"]
    procs = []
    for rank, lr in ((0, "5e-3"), (1, "1e-3")):
        out = open(tmp_path / f"node{rank}.out", "w")  # noqa: SIM115 - closed with the process
        procs.append(
            subprocess.Popen(
                [*cmd, "--node-rank", str(rank), "--learning-rate", lr, "--runs-dir", str(tmp_path / f"node{rank}")],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
                start_new_session=True,
            )
        )
    assert all(p.wait(300) != 0 for p in procs)
    st = read_status(tmp_path / "node0" / "mn")
    assert st["status"] == "failed" and "Node(s) 1 would train other settings or rows than node 0" in st["error"]
    assert not (st.get("step") or 0)
