import ast
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from test_flow_grpo import PROMPTS, TINY_FLOW_ARGS, brightness

from trl_ext import FlowGRPOConfig, FlowGRPOTrainer, FlowRTPOConfig, FlowRTPOTrainer
from trl_ext.models.prompt_editor import PromptEditorConfig, PromptEditorPolicy
from trl_ext.testing import save_tiny_sd3
from trl_ext.trainers.flow.editor import editor_step


@pytest.fixture(scope="module")
def sd3_path(tmp_path_factory):
    return save_tiny_sd3(tmp_path_factory.mktemp("sd3"))


def _args(tmp_path, **overrides):
    return FlowRTPOConfig(**{**TINY_FLOW_ARGS, "output_dir": str(tmp_path), **overrides})


def encode(prompts):  # stands in for GTR: a fixed random embedding per prompt length
    return torch.stack([torch.randn(16, generator=torch.Generator().manual_seed(len(p))) for p in prompts])


def decode(embeddings):  # stands in for vec2text
    return [f"a cat {'bright' if e[0] > 0 else 'dark'}" for e in embeddings]


def test_prompt_editor_is_trained_with_the_group_advantages(sd3_path, tmp_path):
    editor = PromptEditorPolicy(
        encode, decode, 16, PromptEditorConfig(hidden_dim=16, perturbation_scale=1.0, init_log_std=-2.0)
    )
    before = [p.detach().clone() for p in editor.parameters()]
    args = _args(tmp_path, max_steps=2, num_edits_per_prompt=2, editor_learning_rate=1e-2)
    seen = []

    def brightness_with_original(prompts, images, original_prompt, **kwargs):
        seen.append((list(prompts), list(original_prompt)))
        return brightness(prompts, images)

    trainer = FlowRTPOTrainer(sd3_path, brightness_with_original, args, PROMPTS, prompt_editor=editor)
    trainer.train()
    history = trainer.state.log_history
    assert history[0]["editor/ratio"] == pytest.approx(1.0) and "editor/radius" in history[0]
    assert any(not torch.equal(a, b) for a, b in zip(before, editor.parameters()))
    edited, originals = seen[0]
    assert all(p.startswith("a cat ") for p in edited) and len(set(originals)) <= 2 and len(edited) == 8
    trainer.save_model()
    reloaded = PromptEditorPolicy(encode, decode, 16, PromptEditorConfig(hidden_dim=16))
    reloaded.load_state_dict(load_file(str(tmp_path / "prompt_editor.safetensors")))
    for name, value in editor.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[name], value)
    with pytest.raises(ValueError, match="num_edits_per_prompt"):
        FlowRTPOTrainer(sd3_path, brightness, _args(tmp_path, num_edits_per_prompt=3), PROMPTS, prompt_editor=editor)


@pytest.mark.distributed
@pytest.mark.parametrize("mode", ["flow_rtpo", "flow_grpo"])
def test_two_processes_keep_lora_and_editor_in_sync(sd3_path, launch_two_processes, mode):
    ranks = launch_two_processes("flow_rtpo_two_steps.py", sd3_path, mode)
    # each process draws its own prompts: disjoint rows of every pass over the data
    assert ranks[0]["prompts"] and set(ranks[0]["prompts"]).isdisjoint(ranks[1]["prompts"])
    names = ("lora", "editor") if mode == "flow_rtpo" else ("lora",)
    for name in names:  # ... and the gradients are averaged: identical weights on both ranks
        torch.testing.assert_close(torch.tensor(ranks[0][name]), torch.tensor(ranks[1][name]), rtol=0, atol=0)
    if mode == "flow_rtpo":
        assert ranks[0]["radius"] == ranks[1]["radius"]


def test_without_an_editor_flow_rtpo_is_flow_grpo(sd3_path, tmp_path):
    """FlowRTPOTrainer without a prompt editor trains as its parent, FlowGRPOTrainer: the same LoRA weights, bit for
    bit, and the same logs after two steps of two minibatches (off-policy, clipped) with KL."""
    weights, logs = {}, {}
    for trainer_class, config_class in ((FlowGRPOTrainer, FlowGRPOConfig), (FlowRTPOTrainer, FlowRTPOConfig)):
        values = {**TINY_FLOW_ARGS, "max_steps": 2, "beta": 0.04, "num_mini_batches": 2}
        args = config_class(output_dir=str(tmp_path / trainer_class.__name__), **values)
        trainer = trainer_class(sd3_path, brightness, args, PROMPTS)
        assert trainer.images_per_prompt == 4  # num_generations: num_edits_per_prompt applies with an editor only
        trainer.train()
        weights[trainer_class] = [p.detach().clone() for p in trainer.trainable_params]
        logs[trainer_class] = [
            {k: v for k, v in h.items() if "runtime" not in k and "per_second" not in k}
            for h in trainer.state.log_history
        ]
        trainer.create_model_card(str(tmp_path / trainer_class.__name__))
        card = (tmp_path / trainer_class.__name__ / "README.md").read_text()
        assert f"trained with `trl_ext.{trainer_class.__name__}`" in card
    assert logs[FlowRTPOTrainer] == logs[FlowGRPOTrainer] and len(logs[FlowGRPOTrainer]) == 2
    assert not any(k.startswith("editor/") for h in logs[FlowRTPOTrainer] for k in h)
    for a, b in zip(weights[FlowRTPOTrainer], weights[FlowGRPOTrainer], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not (tmp_path / "FlowRTPOTrainer" / "prompt_editor.safetensors").exists()


def test_editor_step_takes_its_values_as_arguments():
    """One original prompt, two edits, two images each, image rewards 1, 3 | 5, 7 and no similarity function: edit
    rewards 2 and 6 (mean 4), advantages -1/sqrt(2) and +1/sqrt(2) (unbiased std), on-policy ratio 1 so loss
    -mean(A) = 0; within-group variance Var(1, 3, 5, 7) = 20/3 smoothed from 0 with rho 0.9 to 2/3, radius
    0.04 + 0.1 * (2/3) / (2/3 + 0.01). The SGD step raises the log-probability of the better edit over the worse."""
    torch.manual_seed(0)
    editor = PromptEditorPolicy(encode, decode, 16, PromptEditorConfig(hidden_dim=16, perturbation_scale=1.0))
    edits = editor.sample(["a dog", "a dog"])
    optimizer = torch.optim.SGD(editor.parameters(), lr=1e-3)
    logs = editor_step(
        editor,
        optimizer,
        edits,
        torch.tensor([1.0, 3.0, 5.0, 7.0]),
        num_generations=2,
        num_edits_per_prompt=2,
        scale_rewards="group",
        epsilon=0.2,
        accelerator=Accelerator(cpu=True),
    )
    assert logs["editor/reward"] == pytest.approx(4.0) and logs["editor/semantic_penalty"] == 0.0
    assert logs["editor/ratio"] == pytest.approx(1.0) and logs["editor/clip_ratio/region_mean"] == 0.0
    assert logs["editor/loss"] == pytest.approx(0.0, abs=1e-6)
    assert logs["editor/radius"] == pytest.approx(0.04 + 0.1 * (2 / 3) / (2 / 3 + 0.01), rel=1e-6)
    assert float(editor.reward_variance) == pytest.approx(2 / 3, rel=1e-6)
    with torch.no_grad():
        after = editor(edits.embeddings, edits.deltas)
    assert after[1] - after[0] > edits.log_probs[1] - edits.log_probs[0]


def test_editor_options_belong_to_flow_rtpo(sd3_path, tmp_path):
    editor_fields = {"num_edits_per_prompt", "editor_learning_rate", "editor_epsilon"}
    assert editor_fields.isdisjoint(FlowGRPOConfig.__dataclass_fields__)
    assert editor_fields <= set(FlowRTPOConfig.__dataclass_fields__)
    for overrides, message in (
        ({"num_edits_per_prompt": 0}, "num_edits_per_prompt must be >= 1"),
        ({"editor_epsilon": 0.0}, "editor_epsilon must be > 0"),
        ({"editor_learning_rate": -1e-3}, "editor_learning_rate must be >= 0"),
    ):
        with pytest.raises(ValueError, match=message):
            _args(tmp_path, **overrides)
    editor = PromptEditorPolicy(encode, decode, 16, PromptEditorConfig(hidden_dim=16))
    grpo_args = FlowGRPOConfig(output_dir=str(tmp_path), **TINY_FLOW_ARGS)
    with pytest.raises(TypeError, match="needs a FlowRTPOConfig"):
        FlowRTPOTrainer(sd3_path, brightness, grpo_args, PROMPTS, prompt_editor=editor)


def test_flow_modules_import_without_a_circle():
    """Within trl_ext/trainers/flow/, the editor update imports no trainer and no module imports one that imports it
    back: FlowGRPO (config, trainer) <- FlowRTPO (config, trainer) <- editor maths only."""
    folder = Path(__file__).parents[1] / "trl_ext" / "trainers" / "flow"
    imports = {}
    for path in folder.glob("*.py"):
        tree = ast.parse(path.read_text())
        imports[path.stem] = {
            node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1
        }
    assert imports["editor"] == set()
    assert imports["config"] == set() and imports["trainer"] == {"config"}
    assert imports["rtpo_trainer"] == {"editor", "rtpo_config", "trainer"} and imports["rtpo_config"] == {"config"}
