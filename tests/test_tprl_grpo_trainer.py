import inspect

import numpy as np
import pytest
import torch
import trl
from datasets import Dataset
from PIL import Image
from trl import GRPOConfig, GRPOTrainer

from trl_ext import TPRLGRPOConfig, TPRLGRPOTrainer
from trl_ext.data import ColourTokenReward, colour_question_dataset
from trl_ext.testing import load_qwen_vl_processor, save_tiny_qwen2, save_tiny_qwen_vl, vision_special_token_ids
from trl_ext.trainers.tprl_perturbations import random_patch_blackening


MAX_COMPLETION_LENGTH = 4
colour_tokens = ColourTokenReward(MAX_COMPLETION_LENGTH)


@pytest.fixture(scope="module")
def vlm(tmp_path_factory):
    path = save_tiny_qwen_vl(tmp_path_factory.mktemp("tiny_vl"), variant="qwen2_5_vl")
    processor = load_qwen_vl_processor(path)
    dataset = colour_question_dataset(16)
    return path, processor, dataset


def _args(config_class, tmp_path, processor, **overrides):
    values = dict(
        output_dir=str(tmp_path), per_device_train_batch_size=8, num_generations=4, max_completion_length=MAX_COMPLETION_LENGTH,
        max_steps=1, learning_rate=0.03, bf16=False, use_cpu=True, report_to="none", save_strategy="no",
        logging_steps=1, seed=0, generation_kwargs={"suppress_tokens": vision_special_token_ids(processor.tokenizer)},
    )  # fmt: skip
    values.update(overrides)
    return config_class(**values)


def _loss_and_grads(trainer):
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(); we call the loss directly
    batch = next(iter(trainer.get_train_dataloader()))
    torch.manual_seed(1)
    inputs = trainer._prepare_inputs(batch)
    loss = trainer.compute_loss(trainer.model, inputs)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, inputs


@pytest.mark.parametrize(
    "features",
    [
        {},  # every TPRL feature off
        # features on, but at settings that select every token with factor 1: the (B, T) folding path must agree
        {"enable_perception_filtering": True, "top_p_perception_tokens": 1.0, "enable_trajectory_reweighting": True,
         "trajectory_scaling_min": 1.0, "trajectory_scaling_rule": "bounded"},
    ],
)  # fmt: skip
def test_matches_grpo_trainer_loss_and_gradients(vlm, tmp_path, features):
    path, processor, dataset = vlm
    results = []
    for trainer_class, config_class, extra in [(GRPOTrainer, GRPOConfig, {}), (TPRLGRPOTrainer, TPRLGRPOConfig, features)]:
        torch.manual_seed(0)
        args = _args(config_class, tmp_path, processor, beta=0.04, **extra)
        trainer = trainer_class(model=path, reward_funcs=colour_tokens, args=args, train_dataset=dataset, processing_class=processor)
        results.append(_loss_and_grads(trainer))
    (loss_ref, grads_ref, inputs_ref), (loss, grads, inputs) = results
    assert torch.equal(inputs_ref["completion_ids"], inputs["completion_ids"])
    assert grads_ref and grads.keys() == grads_ref.keys()
    torch.testing.assert_close(loss, loss_ref, atol=1e-6, rtol=0)
    for name in grads_ref:
        torch.testing.assert_close(grads[name], grads_ref[name], atol=1e-6, rtol=1e-5)
    assert any(g.abs().sum() > 0 for g in grads.values())


def test_perception_filtering_and_shaping_fold_into_token_advantages(vlm, tmp_path):
    path, processor, dataset = vlm
    args = _args(
        TPRLGRPOConfig, tmp_path, processor, enable_perception_filtering=True, top_p_perception_tokens=0.4,
        enable_entropy_filtering=True, top_p_entropy_tokens=0.2, enable_trajectory_reweighting=True,
    )  # fmt: skip
    trainer = TPRLGRPOTrainer(model=path, reward_funcs=colour_tokens, args=args, train_dataset=dataset, processing_class=processor)
    _, _, inputs = _loss_and_grads(trainer)
    advantages, mask = inputs["advantages"], inputs["completion_mask"].bool()
    assert advantages.shape == mask.shape
    metrics = trainer._metrics["train"]
    # 4-token completions: ceil(4 * 0.4) = 2 by perception, ceil(4 * 0.2) = 1 by entropy, OR-ed: 2 or 3 per row
    assert metrics["tprl/perception_token_fraction"][-1] == pytest.approx(0.5)
    assert metrics["tprl/entropy_token_fraction"][-1] == pytest.approx(0.25)
    selected = (advantages != 0).sum(1)
    assert ((selected == 0) | ((selected >= 2) & (selected <= 3))).all()
    assert metrics["tprl/scaling_factor_mean"][-1] == pytest.approx(1.0, abs=1e-5)


def test_entropy_filtering_alone_uses_the_per_response_rule_in_the_loss(vlm, tmp_path):
    path, processor, dataset = vlm
    args = _args(TPRLGRPOConfig, tmp_path, processor, enable_entropy_filtering=True, top_p_entropy_tokens=0.5)
    trainer = TPRLGRPOTrainer(model=path, reward_funcs=colour_tokens, args=args, train_dataset=dataset, processing_class=processor)
    assert trainer.top_entropy_quantile == 0.5  # TRL now calls our get_high_entropy_mask inside its loss
    entropies = torch.tensor([[3.0, 1.0, 2.0, 0.0], [5.0, 4.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    expected = torch.tensor([[True, False, True, False], [True, False, False, False]])
    assert torch.equal(trainer.get_high_entropy_mask(entropies, mask, threshold=0.5), expected)


def test_online_filtering_masks_dropped_groups(vlm, tmp_path):
    path, processor, dataset = vlm

    def solved_on_red(completions, answer, **kwargs):  # red groups are "solved" (mean 1): dropped; blue mean 0.5
        return [1.0 if a == "red" else float(i % 2) for i, a in enumerate(answer)]

    args = _args(TPRLGRPOConfig, tmp_path, processor, online_filtering=True, filter_reward="solved_on_red", seed=3)
    trainer = TPRLGRPOTrainer(model=path, reward_funcs=[solved_on_red, colour_tokens], args=args, train_dataset=dataset, processing_class=processor)
    trainer.model.train()
    inputs = trainer._generate_and_score_completions(next(iter(trainer.get_train_dataloader())))  # unshuffled rows
    group_means = trainer._rewards_per_func[:, 0].view(-1, 4).mean(1)
    dropped = (group_means == 1.0).repeat_interleave(4)
    assert trainer._metrics["train"]["tprl/filtered_group_fraction"][-1] == pytest.approx(dropped.float().mean().item())
    assert (inputs["completion_mask"][dropped] == 0).all() and (inputs["advantages"][dropped] == 0).all()
    assert (inputs["completion_mask"][~dropped].sum(1) > 0).all()
    assert inputs["num_items_in_batch"] == inputs["completion_mask"].sum()
    with pytest.raises(ValueError, match="not one of the reward functions"):
        TPRLGRPOTrainer(
            model=path, reward_funcs=colour_tokens, processing_class=processor, train_dataset=dataset,
            args=_args(TPRLGRPOConfig, tmp_path, processor, online_filtering=True, filter_reward="accuracy"),
        )  # fmt: skip


def test_kl_in_reward_with_adaptive_controller(vlm, tmp_path):
    path, processor, dataset = vlm
    args = _args(
        TPRLGRPOConfig, tmp_path, processor, max_steps=2, beta=0.1, kl_penalty="reward", kl_estimator="k2",
        kl_controller="adaptive", kl_target=1.0, kl_horizon=100, advantage_estimator="rloo",
    )  # fmt: skip
    trainer = TPRLGRPOTrainer(model=path, reward_funcs=colour_tokens, args=args, train_dataset=dataset, processing_class=processor)
    trainer.train()
    coefs = trainer._metrics["train"]["tprl/kl_coef"] or [h["tprl/kl_coef"] for h in trainer.state.log_history if "tprl/kl_coef" in h]
    # first step on-policy: KL 0 < target, so the coefficient shrinks by (1 - 0.2 * 32 / 100)
    assert coefs[0] == pytest.approx(0.1) and trainer.beta < 0.1
    assert trainer.kl_controller.coef == trainer.beta


def test_text_only_model_rejects_perception_filtering(tmp_path):
    path = save_tiny_qwen2(tmp_path / "lm")
    dataset = Dataset.from_dict({"prompt": ["a", "b", "c", "d"]})
    args = TPRLGRPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=2, max_completion_length=4,
        max_steps=1, bf16=False, use_cpu=True, report_to="none", enable_perception_filtering=True,
    )  # fmt: skip
    trainer = TPRLGRPOTrainer(model=path, reward_funcs=lambda completions, **kw: [1.0] * len(completions), args=args, train_dataset=dataset)
    with pytest.raises(ValueError, match="need images"):
        trainer.train()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"kl_estimator": "k1"}, "needs kl_penalty='reward'"),
        ({"kl_penalty": "reward"}, "set beta > 0"),
        ({"online_filtering": True}, "filter_reward"),
        ({"top_p_perception_tokens": 0.0}, r"\(0, 1\]"),
        ({"enable_entropy_filtering": True, "top_entropy_quantile": 0.5}, "set only one"),
        ({"dependency_estimator": "full"}, "dependency_estimator"),
    ],
)
def test_config_rejects_bad_values(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        TPRLGRPOConfig(output_dir=str(tmp_path), bf16=False, use_cpu=True, **overrides)


def test_sampled_dependency_correlates_with_full_kl(vlm, tmp_path):
    path, processor, dataset = vlm
    args = _args(TPRLGRPOConfig, tmp_path, processor, enable_perception_filtering=True, max_completion_length=16)
    trainer = TPRLGRPOTrainer(model=path, reward_funcs=colour_tokens, args=args, train_dataset=dataset, processing_class=processor)
    trainer.model.train()
    batch = next(iter(trainer.get_train_dataloader()))
    rollout = super(TPRLGRPOTrainer, trainer)._generate_and_score_completions(batch)
    mask = rollout["completion_mask"].bool()
    logps, _ = trainer._rollout_logps(rollout, batch)
    scores = {}
    for estimator in ("sampled", "kl"):
        trainer.args.dependency_estimator = estimator
        trainer._perturbation_rng = np.random.default_rng(0)  # the same perturbed images for both
        scores[estimator] = trainer._token_dependency(rollout, batch, logps)[mask]
    correlation = torch.corrcoef(torch.stack([scores["sampled"], scores["kl"]]))[0, 1].item()
    print(f"corr(sampled, kl) over {int(mask.sum())} tokens: {correlation:.3f}")
    assert correlation > 0.1
    assert (scores["kl"] >= 0).all() and (scores["sampled"] >= 0).all()


def test_learns_the_colour_task_with_tprl_features_on(vlm, tmp_path):
    path, processor, dataset = vlm
    args = _args(
        TPRLGRPOConfig, tmp_path, processor, max_steps=120, per_device_train_batch_size=16, learning_rate=0.005,
        lr_scheduler_type="constant",
        enable_perception_filtering=True,
        top_p_perception_tokens=0.4, enable_trajectory_reweighting=True, trajectory_scaling_min=0.9, epsilon_high=0.28,
    )  # fmt: skip
    trainer = TPRLGRPOTrainer(model=path, reward_funcs=colour_tokens, args=args, train_dataset=dataset, processing_class=processor)
    trainer.train()
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    start, end = np.mean(rewards[:10]), np.mean(rewards[-10:])
    print(f"colour reward: first 10 steps {start:.3f}, last 10 steps {end:.3f}")
    assert start < 0.6 and end > 0.75  # an image-blind policy cannot average more than 0.5


def test_patch_blackening_is_seeded_and_grid_aligned():
    image = Image.new("RGB", (30, 20), (200, 100, 50))
    a = np.array(random_patch_blackening(image, np.random.default_rng(0), patch_size=14, probability=0.5))
    b = np.array(random_patch_blackening(image, np.random.default_rng(0), patch_size=14, probability=0.5))
    assert np.array_equal(a, b)
    black = (a == 0).all(-1)
    for top in (0, 14):
        for left in (0, 14, 28):
            patch = black[top : top + 14, left : left + 14]
            assert patch.all() or not patch.any()


def test_trl_hooks_we_rely_on_are_unchanged():
    """TPRLGRPOTrainer overrides four GRPOTrainer hooks; a TRL upgrade that changes them must fail here first."""
    assert trl.__version__.startswith("1.16."), "TPRLGRPOTrainer is tested against TRL 1.16 only"
    loss_source = inspect.getsource(GRPOTrainer._compute_loss)
    assert "if advantages.dim() == 1:" in loss_source  # (B, T) advantages are accepted as they are
    assert "self.get_high_entropy_mask(entropies, mask, 1 - self.top_entropy_quantile)" in loss_source
    assert "per_token_loss + self.beta * per_token_kl" in loss_source
    assert list(inspect.signature(GRPOTrainer._calculate_rewards).parameters) == ["self", "inputs", "prompts", "completions", "completion_ids_list"]
    assert {"compute_entropy", "pixel_values", "image_grid_thw", "num_images"} <= set(
        inspect.signature(GRPOTrainer._get_per_token_logps_and_entropies).parameters
    )
    source = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    assert "rewards_per_func = self._calculate_rewards(" in source and '"advantages": advantages' in source


def test_remax_subtracts_the_greedy_completions_reward(vlm, tmp_path):
    path, processor, dataset = vlm
    calls = []

    def recording_reward(completions, completion_ids, answer, **kwargs):
        values = colour_tokens(completions=completions, completion_ids=completion_ids, answer=answer)
        calls.append(values)
        return values

    args = _args(TPRLGRPOConfig, tmp_path, processor, advantage_estimator="remax")
    trainer = TPRLGRPOTrainer(model=path, reward_funcs=recording_reward, args=args, train_dataset=dataset, processing_class=processor)
    trainer.model.train()
    batch = next(iter(trainer.get_train_dataloader()))
    output = trainer._generate_and_score_completions(batch)
    sampled, greedy = torch.tensor(calls[0]), torch.tensor(calls[1])
    # one greedy generation per run of identical examples (a prompt group, or several identical groups)
    runs = torch.tensor([0] + [int(a["answer"] != b["answer"]) for a, b in zip(batch, batch[1:])]).cumsum(0)
    assert len(sampled) == 8 and len(greedy) == int(runs[-1]) + 1 <= 2
    expected = sampled - greedy[runs]
    torch.testing.assert_close(output["advantages"][:, 0], expected)
    assert (output["advantages"] == output["advantages"][:, :1]).all()  # sequence-level advantage on every token
