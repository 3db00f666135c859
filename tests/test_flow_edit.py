"""Flow-GRPO on the image editor (`QwenImageEditPipeline`): a condition image per sample, loaded from a tiny directory
through `DiffusionPipeline.from_pretrained` (with the torchvision-free processor) as users load the real one. The SDE
sampler's deterministic limit is the pipeline's own `__call__`, the ratio is exactly 1 on-policy, the KL to the base is
the Gaussian KL, the LoRA loads with the pipeline's `load_lora_weights`, prompts are the benchmark's edit records with a
group of edits per record, the VLM judge (or any reward function) scores the edits and an unscored edit is masked and
counted, never zero; two processes keep identical weights on different records."""

import numpy as np
import pytest
import torch
from PIL import Image
from test_flow_families import _perturb_lora, check_kl_is_the_gaussian_kl, check_saved_lora_loads
from test_flow_grpo import TINY_FLOW_ARGS

from trl_ext import FlowGRPOConfig, FlowGRPOTrainer
from trl_ext.evaluation.image_edit import edit_records_dataset, load_edit_items
from trl_ext.evaluation.image_edit.editors import _condition_area
from trl_ext.models.flow import FlowSamplingConfig, load_flow_pipeline, sample_trajectories, trajectory_step_log_prob
from trl_ext.testing import save_tiny_qwen_image_edit


pytestmark = pytest.mark.usefixtures("one_thread")

CONDITION_AREA = 64 * 64  # the pipeline's 1024² would take minutes per rollout on CPU
EDIT_ARGS = {
    **TINY_FLOW_ARGS,
    "per_device_train_batch_size": 4,
    "num_inference_steps": 3,
    "max_sequence_length": 32,
    "condition_area": CONDITION_AREA,
}


@pytest.fixture(scope="module")
def edit_path(tmp_path_factory):
    return save_tiny_qwen_image_edit(tmp_path_factory.mktemp("qwen_image_edit"))


@pytest.fixture(scope="module")
def records():
    """The bundled benchmark set (10 records of 5 categories, images of every aspect ratio and mode)."""
    return edit_records_dataset(load_edit_items("tiny"))


def load(path):
    """The pipeline as users load it: `DiffusionPipeline.from_pretrained`, given the torchvision-free processor."""
    pipe = load_flow_pipeline(path)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def brightness(prompts, images, **kwargs):
    return images.mean(dim=(1, 2, 3)).tolist()


def _args(tmp_path, **overrides):
    return FlowGRPOConfig(**{**EDIT_ARGS, "output_dir": str(tmp_path), **overrides})


def _rollout(trainer, records, seed=0):
    rows = records.select([0] * 2 + [3] * 2)  # two records (of one aspect ratio each), two edits each
    return sample_trajectories(
        trainer.adapter,
        rows["prompt"],
        trainer.sampling,
        generator=torch.Generator().manual_seed(seed),
        transformer=trainer.accelerator.unwrap_model(trainer.transformer),
        images=rows["source_image"],
    )


def test_the_pipeline_class_is_the_edit_family(edit_path):
    assert type(load(edit_path)).__name__ == "QwenImageEditPipeline"


def test_deterministic_limit_is_the_edit_pipelines_own_sampler(edit_path):
    """With noise level 0 the edits equal `QwenImageEditPipeline.__call__` with the same seed: the condition image
    resized as the pipeline does, seen by the text encoder, VAE-encoded and appended to the latent tokens, true CFG
    with the negative prompt and its norm rescale."""
    pipe = load(edit_path)
    images = [Image.new("RGB", (96, 64), (200, 40, 40)), Image.new("RGB", (96, 64), (20, 40, 220))]
    prompts = ["make it blue", "add a cat"]
    config = FlowSamplingConfig(4, 4.5, 0.0, 32, 32, 32, condition_area=CONDITION_AREA)
    ours = sample_trajectories(pipe, prompts, config, generator=torch.Generator().manual_seed(0), images=images)
    with _condition_area(pipe, CONDITION_AREA):
        reference = pipe(
            image=images,
            prompt=prompts,
            negative_prompt=[" "] * 2,
            true_cfg_scale=4.5,
            height=32,
            width=32,
            num_inference_steps=4,
            max_sequence_length=32,
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
        ).images
    assert ours.log_probs.abs().max() == 0
    torch.testing.assert_close(ours.images, reference, rtol=0, atol=1e-5)
    # the condition images and the guidance do change the edits (so that the comparison covers them; float noise is
    # about 1e-7 here)
    swapped = sample_trajectories(
        pipe, prompts, config, generator=torch.Generator().manual_seed(0), images=images[::-1]
    )
    assert (swapped.images - ours.images).abs().max() > 1e-5
    config.guidance_scale = 1.0
    unguided = sample_trajectories(pipe, prompts, config, generator=torch.Generator().manual_seed(0), images=images)
    assert (unguided.images - ours.images).abs().max() > 1e-5
    with pytest.raises(ValueError, match="edits a condition image: pass one image per prompt"):
        sample_trajectories(pipe, prompts, config)


def test_ratio_is_exactly_one_before_the_first_update(edit_path, records, tmp_path):
    trainer = FlowGRPOTrainer(edit_path, brightness, _args(tmp_path, beta=0.04), records)
    _perturb_lora(trainer)
    trajectory = _rollout(trainer, records)
    for step in range(trainer.sampling.num_inference_steps):  # recomputed through the prepared (trained) module
        out = trajectory_step_log_prob(trainer.transformer, trajectory, step, trainer.sampling)
        torch.testing.assert_close(out.log_prob, trajectory.log_probs[:, step], rtol=0, atol=0)
    logs = trainer.training_step()
    assert logs["flow/ratio"] == pytest.approx(1.0, abs=1e-6) and logs["clip_ratio/region_mean"] == 0.0
    assert logs["kl"] > 0 and logs["grad_norm"] > 0


def test_kl_to_the_base_model_is_the_gaussian_kl(edit_path, records, tmp_path):
    """KL(N(μ_θ, s²) ‖ N(μ_ref, s²)) from `torch.distributions`, μ_ref from a separately loaded base pipeline."""
    trainer = FlowGRPOTrainer(edit_path, brightness, _args(tmp_path, beta=0.04), records)
    _perturb_lora(trainer)
    base = load(edit_path)
    trajectory = _rollout(trainer, records, seed=1)
    check_kl_is_the_gaussian_kl(trainer, base, trajectory, torch.tensor([3, 0]))


def test_saved_lora_loads_with_the_pipelines_own_loader(edit_path, records, tmp_path):
    trainer = FlowGRPOTrainer(edit_path, brightness, _args(tmp_path), records)
    trainer.train()
    check_saved_lora_loads(trainer, load(edit_path), "QwenImageEditPipeline")


def test_groups_are_edits_of_one_record_and_unscored_edits_are_masked(edit_path, records, tmp_path):
    """Each step's groups are `num_generations` edits of one record (its instruction, source image and columns); a
    reward of `None` masks the edit and is counted: the logged mean is over the scored edits (1.0), not 0.75."""
    calls = []

    def judge_like(prompts, images, source_image, category, id, **kwargs):
        calls.append((list(prompts), list(id), [np.asarray(image).sum() for image in source_image]))
        return [None if i % 4 == 0 else 1.0 for i in range(len(prompts))]

    args = _args(tmp_path, per_device_train_batch_size=4, gradient_accumulation_steps=2, num_generations=4)
    trainer = FlowGRPOTrainer(edit_path, judge_like, args, records)
    logs = trainer.training_step()
    prompts, ids, sources = calls[0]
    assert len(prompts) == 8
    for group in (slice(0, 4), slice(4, 8)):
        assert len(set(ids[group])) == 1 and len(set(prompts[group])) == 1 and len(set(sources[group])) == 1
    assert ids[0] != ids[4]
    row = records["id"].index(ids[0])
    assert prompts[0] == records[row]["prompt"]
    assert logs["rewards/judge_like/masked_count"] == 2 and logs["reward"] == pytest.approx(1.0)


def test_the_vlm_judge_scores_edits_against_their_source(edit_path, records, judge_dir, tmp_path):
    """The local tiny judge as the reward (expected score): it sees the source image and the edit; with the default
    digit-mass floor the tiny judge answers no number, so every edit is unscored, counted, and the step skipped."""
    from trl_ext.rewards import VLMJudgeReward

    judge = VLMJudgeReward(str(judge_dir), device="cpu", compare_with_original=True, min_digit_mass=0.0)
    seen = []
    build_request = judge.build_request
    judge.build_request = lambda *a, **k: seen.append(build_request(*a, **k)) or seen[-1]
    trainer = FlowGRPOTrainer(edit_path, judge, _args(tmp_path), records)
    logs = trainer.training_step()
    scores = judge.last_components["score"]
    assert all(0 <= s <= 10 for s in scores) and logs["reward"] == pytest.approx(np.mean(scores), abs=1e-5)
    assert all(len(request.images) == 2 for request in seen)  # the source image, then the edit
    assert logs["grad_norm"] > 0

    strict = VLMJudgeReward(str(judge_dir), device="cpu", compare_with_original=True)
    trainer = FlowGRPOTrainer(edit_path, strict, _args(tmp_path), records)
    logs = trainer.training_step()
    assert logs["rewards/vlm_judge/masked_count"] == 4 and logs["rewards/vlm_judge/low_digit_mass"] == 4
    assert trainer.skipped_steps == 1 and "grad_norm" not in logs


def test_an_edit_dataset_needs_source_images(edit_path, tmp_path):
    with pytest.raises(ValueError, match="needs a 'source_image' column"):
        FlowGRPOTrainer(edit_path, brightness, _args(tmp_path), ["make it blue"])


@pytest.mark.distributed
def test_two_processes_keep_identical_weights(edit_path, launch_two_processes):
    ranks = launch_two_processes("flow_edit_two_steps.py", edit_path)
    assert ranks[0]["ids"] and set(ranks[0]["ids"]).isdisjoint(ranks[1]["ids"])
    torch.testing.assert_close(torch.tensor(ranks[0]["lora"]), torch.tensor(ranks[1]["lora"]), rtol=0, atol=0)


def test_two_reports_side_by_side(tmp_path):
    """Per category the two means and their difference (hand-computed); a category one side never scored has no
    difference, and the chart and tables are written."""
    import json

    from trl_ext.evaluation.image_edit import EditItem, build_report, write_comparison

    image = Image.new("RGB", (8, 8))
    items = [EditItem(f"i{k}", k, category, "edit", image) for k, category in enumerate("aabbc")]

    def report(scores):
        results = {
            f"i{k}": {"status": "ok" if s is not None else "low_digit_mass", "score": s} for k, s in enumerate(scores)
        }
        return build_report(items, results, {"judging": {"high": 10}})

    comparison = write_comparison(
        str(tmp_path), {"base": report([2.0, 4.0, 6.0, None, None]), "trained": report([5.0, 7.0, 1.0, 3.0, 8.0])}
    )
    rows = comparison["categories"]
    assert rows["a"]["base"]["mean"] == 3.0 and rows["a"]["trained"]["mean"] == 6.0 and rows["a"]["difference"] == 3.0
    assert rows["b"]["difference"] == -4.0 and rows["b"]["base"]["n_scored"] == 1 and rows["b"]["trained"]["n"] == 2
    assert rows["c"]["base"]["mean"] is None and rows["c"]["difference"] is None
    assert comparison["overall"]["micro"]["difference"] == pytest.approx(24 / 5 - 4.0)
    assert json.loads((tmp_path / "comparison.json").read_text()) == comparison
    markdown = (tmp_path / "comparison.md").read_text()
    assert "| a | 3.000 (2/2) | 6.000 (2/2) | 3.000 |" in markdown and "| c | – (0/1) | 8.000 (1/1) | – |" in markdown
    assert (tmp_path / "comparison.png").stat().st_size > 0
