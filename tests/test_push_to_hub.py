"""`push_to_hub` in the loop trainers, as `transformers.Trainer`: the repository is created at construction, each
checkpoint is pushed per `hub_strategy`, `push_to_hub()` uploads the model and its card, and offline mode is an error at
construction. The Hub is a loopback HTTP server that records the API calls `huggingface_hub` makes."""

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import huggingface_hub
import pytest
from transformers import TrainerCallback

from trl_ext import DiscreteDiffusionSFTConfig, DiscreteDiffusionSFTTrainer
from trl_ext.data import generate_latex_corpus
from trl_ext.testing import build_tiny_tokenizer, save_tiny_sedd


CORPUS = generate_latex_corpus(16)
TOKEN = "hf_test_token"


class FakeHub(BaseHTTPRequestHandler):
    """The Hub endpoints `create_repo` and `upload_folder` call. Every file is answered the "regular" upload mode, so
    its content arrives base64-encoded in the commit's NDJSON (no LFS / Xet transfer)."""

    def log_message(self, *args) -> None:
        pass

    def _reply(self, payload: dict, status: int = 200) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.server.calls.append({"method": "GET", "path": self.path})
        self._reply({"error": "not mocked"}, 404)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        call = {"method": "POST", "path": self.path, "authorization": self.headers.get("Authorization")}
        self.server.calls.append(call)
        endpoint = f"http://127.0.0.1:{self.server.server_port}"
        if self.path == "/api/repos/create":
            call["json"] = request = json.loads(body)
            self._reply({"url": f"{endpoint}/{request.get('organization') or 'test-user'}/{request['name']}"})
        elif self.path == "/api/validate-yaml":  # a README.md's metadata, checked before it is committed
            call["json"] = json.loads(body)
            self._reply({"errors": [], "warnings": []})
        elif "/preupload/" in self.path:
            files = json.loads(body)["files"]
            self._reply(
                {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
            )
        elif "/commit/" in self.path:
            self.server.release.wait(timeout=60)  # a test can hold commits back, as a slow upload
            lines = [json.loads(line) for line in body.decode().splitlines()]
            call["summary"] = next(line["value"]["summary"] for line in lines if line["key"] == "header")
            call["files"] = {
                line["value"]["path"]: base64.b64decode(line["value"]["content"])
                for line in lines
                if line["key"] == "file"
            }
            repo_id = self.path.split("/api/models/")[1].split("/commit/")[0]
            self._reply({"commitUrl": f"{endpoint}/{repo_id}/commit/{'0' * 40}", "commitOid": "0" * 40})
        else:
            self._reply({"error": "not mocked"}, 404)


@pytest.fixture
def hub(monkeypatch):
    """A fake Hub on a loopback port, with `huggingface_hub` pointed at it and online for this test only."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    server.calls = []
    server.release = threading.Event()
    server.release.set()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_port}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)  # read at import
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def sedd_path(tmp_path_factory, tokenizer):
    return save_tiny_sedd(tmp_path_factory.mktemp("sedd") / "tiny-sedd", tokens=len(tokenizer))


def trainer_for(sedd_path, tokenizer, output_dir, **overrides) -> DiscreteDiffusionSFTTrainer:
    values = dict(
        output_dir=str(output_dir),
        use_cpu=True,
        report_to="none",
        per_device_train_batch_size=2,
        block_size=32,
        max_steps=2,
        save_strategy="steps",
        save_steps=1,
        disable_tqdm=True,
        push_to_hub=True,
        hub_model_id="test-org/tiny-sedd-sft",
        hub_token=TOKEN,
        hub_private_repo=True,
    )
    return DiscreteDiffusionSFTTrainer(
        sedd_path, DiscreteDiffusionSFTConfig(**{**values, **overrides}), CORPUS, tokenizer
    )


def commits(hub) -> list[dict]:
    return [call for call in hub.calls if "/commit/" in call["path"]]


def test_every_save_creates_the_repo_at_construction_and_commits_each_save_then_the_end(
    hub, sedd_path, tokenizer, tmp_path
):
    trainer = trainer_for(sedd_path, tokenizer, tmp_path, hub_strategy="every_save", hub_always_push=True)
    assert [call["path"] for call in hub.calls] == ["/api/repos/create"]  # before any training
    request = hub.calls[0]["json"]
    assert (request["organization"], request["name"]) == ("test-org", "tiny-sedd-sft")
    assert request.get("visibility", "private" if request.get("private") else None) == "private"
    trainer.train()
    assert [c["summary"] for c in commits(hub)] == ["Training in progress, step 1", "Training in progress, step 2"]
    for commit in commits(hub):  # the model as `save_model` writes it, never the checkpoints
        assert {"config.json", "model.safetensors", "README.md"} <= set(commit["files"])
        assert not any(path.startswith(("checkpoint-", "tmp-checkpoint-")) for path in commit["files"])
    trainer.push_to_hub()
    final = commits(hub)[-1]
    assert final["path"] == "/api/models/test-org/tiny-sedd-sft/commit/main"
    assert final["summary"] == "End of training"
    assert final["files"]["model.safetensors"] == (tmp_path / "model.safetensors").read_bytes()
    # the card saved locally; the model came from a local directory, so it names no base model
    assert final["files"]["README.md"] == (tmp_path / "README.md").read_bytes()
    assert b"base_model" not in final["files"]["README.md"]
    assert {(call["method"], call["authorization"]) for call in hub.calls} == {("POST", f"Bearer {TOKEN}")}


class ReleaseAtSave(TrainerCallback):
    """Lets the fake Hub answer commits once the checkpoint of step `step` is saved (and its push decided)."""

    def __init__(self, release: threading.Event, step: int):
        self.release, self.step = release, step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            self.release.set()


@pytest.mark.parametrize(("always_push", "pushed_steps"), [(False, [1]), (True, [1, 2])])
def test_a_save_during_a_running_push_is_pushed_only_with_hub_always_push(
    hub, sedd_path, tokenizer, tmp_path, always_push, pushed_steps
):
    trainer = trainer_for(sedd_path, tokenizer, tmp_path, hub_strategy="every_save", hub_always_push=always_push)
    trainer.add_callback(ReleaseAtSave(hub.release, step=2))
    hub.release.clear()  # the push of step 1 is still running when step 2 is saved
    trainer.train()  # and train() waits for it
    assert [c["summary"] for c in commits(hub)] == [f"Training in progress, step {s}" for s in pushed_steps]


@pytest.mark.parametrize(
    ("strategy", "folders"),
    [("checkpoint", ["last-checkpoint", "last-checkpoint"]), ("all_checkpoints", ["checkpoint-1", "checkpoint-2"])],
)
def test_checkpoint_strategies_push_the_checkpoint_folders(hub, sedd_path, tokenizer, tmp_path, strategy, folders):
    trainer_for(sedd_path, tokenizer, tmp_path, hub_strategy=strategy, hub_always_push=True).train()
    pushed = [c for c in commits(hub) if c["summary"].endswith(", checkpoint")]
    assert [c["summary"] for c in pushed] == [f"Training in progress, step {s}, checkpoint" for s in (1, 2)]
    for commit, folder in zip(pushed, folders):  # a complete checkpoint of this trainer, which a run resumes from
        assert {f"{folder}/trainer_state.json", f"{folder}/process_state_0.pt"} <= set(commit["files"])
    assert len(commits(hub)) == 4  # and the model at each save


def test_end_pushes_only_at_the_end_to_a_repo_named_after_output_dir(hub, sedd_path, tokenizer, tmp_path):
    output_dir = tmp_path / "my-run"
    trainer = trainer_for(sedd_path, tokenizer, output_dir, hub_strategy="end", hub_model_id=None)
    assert hub.calls[0]["json"]["name"] == "my-run"
    trainer.train()
    assert commits(hub) == []
    trainer.push_to_hub()
    assert [c["path"] for c in commits(hub)] == ["/api/models/test-user/my-run/commit/main"]
    assert {"model.safetensors", "README.md"} <= set(commits(hub)[0]["files"])


def test_offline_push_to_hub_is_an_error_at_construction(hub, sedd_path, tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="offline"):
        trainer_for(sedd_path, tokenizer, tmp_path)
    assert hub.calls == []


def test_two_processes_create_and_push_once_from_the_main_process(hub, sedd_path, launch_two_processes):
    ranks = launch_two_processes("sedd_sft_push_to_hub.py", sedd_path)  # HF_ENDPOINT reaches the processes
    assert [rank["hub_model_id"] for rank in ranks] == ["test-org/tiny-sedd-sft", None]
    assert [call["path"] for call in hub.calls].count("/api/repos/create") == 1
    assert [c["summary"] for c in commits(hub)] == [
        "Training in progress, step 1",
        "Training in progress, step 1, checkpoint",
        "Training in progress, step 2",
        "Training in progress, step 2, checkpoint",
        "End of training",
    ]
    assert {"last-checkpoint/process_state_0.pt", "last-checkpoint/process_state_1.pt"} <= set(
        commits(hub)[1]["files"]
    )
