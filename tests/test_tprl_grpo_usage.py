"""TPRLGRPOTrainer as users run it: the TRL hooks it relies on, ReMax, default configs, online filtering with shaping,
data errors, resume, model cards, logged reward parts, processors loaded without torchvision."""

import inspect
import json
import math
import os

import numpy as np
import pytest
import torch
import transformers
import trl
from datasets import Dataset
from huggingface_hub import ModelCard
from PIL import Image
from trl import GRPOTrainer

from trl_ext import TPRLGRPOConfig, TPRLGRPOTrainer
from trl_ext.data import ColourTokenReward
from trl_ext.hub import model_card_name
from trl_ext.models.processors import load_vlm_processor
from trl_ext.trainers.tprl import trainer as tprl_trainer_module
from trl_ext.trainers.tprl.perturbations import random_patch_blackening
from trl_ext.trainers.tprl.trainer import PERTURBED_LOGPS_KEY


MAX_COMPLETION_LENGTH = 4
colour_tokens = ColourTokenReward(MAX_COMPLETION_LENGTH)


def test_trl_hooks_we_rely_on_are_unchanged():
    """The GRPOTrainer hooks ExtendedGRPOTrainer and TPRLGRPOTrainer override or rely on; a TRL upgrade that changes
    them must fail here."""
    assert trl.__version__.startswith("1.16."), "TPRLGRPOTrainer is tested against TRL 1.16 only"
    loss_source = inspect.getsource(GRPOTrainer._compute_loss)
    assert "if advantages.dim() == 1:" in loss_source  # (B, T) advantages are accepted as they are
    assert "self.get_high_entropy_mask(entropies, mask, 1 - self.top_entropy_quantile)" in loss_source
    assert "per_token_loss + self.beta * per_token_kl" in loss_source
    # on-policy shaping: the loss runs its one forward before it reads the advantages, and the old log-probs of an
    # on-policy batch are that forward's own
    assert loss_source.count("self._get_per_token_logps_and_entropies(") == 1
    assert loss_source.index("self._get_per_token_logps_and_entropies(") < loss_source.index('inputs["advantages"]')
    assert "per_token_logps.detach() if old_per_token_logps is None else old_per_token_logps" in loss_source
    # ExtendedGRPOTrainer's KL controller holds β behind a `beta` property: GRPOTrainer assigns `self.beta` once, in
    # `__init__` after `Trainer.__init__` (which sets `self.args`), and only reads it elsewhere
    init_source = inspect.getsource(GRPOTrainer.__init__)
    assert inspect.getsource(GRPOTrainer).count("self.beta = ") == init_source.count("self.beta = args.beta") == 1
    assert init_source.index("super().__init__(") < init_source.index("self.beta = args.beta")
    assert list(inspect.signature(GRPOTrainer._calculate_rewards).parameters) == [
        "self",
        "inputs",
        "prompts",
        "completions",
        "completion_ids_list",
    ]
    assert {"compute_entropy", "pixel_values", "image_grid_thw", "num_images"} <= set(
        inspect.signature(GRPOTrainer._get_per_token_logps_and_entropies).parameters
    )
    source = inspect.getsource(GRPOTrainer._generate_and_score_completions)
    assert "rewards_per_func = self._calculate_rewards(" in source and '"advantages": advantages' in source
    # reward parts go through the log_metric buffer, which is averaged over processes after the rewards
    assert source.index("self._calculate_rewards(") < source.index(
        "for name in sorted(set(gather_object(list(self._pending_metrics)))):"
    )
    # checkpoint hooks: the RNG states are saved per process before trainer_state.json; TRL restores its own
    # controllers in _load_optimizer_and_scheduler; GRPOTrainer writes the model card at every checkpoint
    trainer_source = inspect.getsource(transformers.Trainer._save_checkpoint)
    assert trainer_source.index("self._save_rng_state(output_dir)") < trainer_source.index("TRAINER_STATE_NAME")
    assert "self._load_optimizer_and_scheduler(resume_from_checkpoint)" in inspect.getsource(
        transformers.Trainer._prepare_for_training
    )
    assert "self.create_model_card(model_name=model_name)" in inspect.getsource(GRPOTrainer._save_checkpoint)
    assert "model.load_state_dict(state_dict, False)" in inspect.getsource(transformers.Trainer._load_from_checkpoint)


def test_remax_subtracts_the_greedy_completions_reward(vlm, tmp_path, tprl_args):
    path, processor, dataset = vlm
    calls = []

    def recording_reward(completions, completion_ids, answer, **kwargs):
        values = colour_tokens(completions=completions, completion_ids=completion_ids, answer=answer)
        calls.append(values)
        return values

    args = tprl_args(TPRLGRPOConfig, tmp_path, processor, advantage_estimator="remax")
    trainer = TPRLGRPOTrainer(
        model=path, reward_funcs=recording_reward, args=args, train_dataset=dataset, processing_class=processor
    )
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


def test_builds_a_default_config_as_grpo_trainer_does(vlm, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default output_dir is relative
    # GRPOConfig's defaults (bf16) are refused on a machine without a bf16 GPU; both trainers see the same patch
    monkeypatch.setattr(transformers.training_args, "is_torch_bf16_gpu_available", lambda: True)
    path, processor, dataset = vlm
    grpo = GRPOTrainer(model=path, reward_funcs=colour_tokens, train_dataset=dataset, processing_class=processor)
    tprl = TPRLGRPOTrainer(model=path, reward_funcs=colour_tokens, train_dataset=dataset, processing_class=processor)
    assert type(tprl.args) is TPRLGRPOConfig
    name = os.path.basename(path)
    assert (grpo.args.output_dir, tprl.args.output_dir) == (f"{name}-GRPO", f"{name}-TPRL-GRPO")
    # bf16: GRPOConfig turns it on everywhere (hence the patch), TPRLGRPOConfig only on a CUDA device with bf16
    derived = {"output_dir", "logging_dir", "run_name", "bf16"}
    grpo_values = {k: v for k, v in grpo.args.to_dict().items() if k not in derived}
    assert {k: tprl.args.to_dict()[k] for k in grpo_values} == grpo_values
    assert grpo.args.bf16 and tprl.args.bf16 == (torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    with pytest.raises(TypeError, match="TPRLGRPOConfig"):
        TPRLGRPOTrainer(model=path, reward_funcs=colour_tokens, args=grpo.args, train_dataset=dataset)


def _solved_on_red(completions, answer, **kwargs):
    """Red groups are "solved" (mean 1, dropped by online filtering); blue rows alternate 0 / 1 (mean 0.5, kept)."""
    return [1.0 if a == "red" else float(i % 2) for i, a in enumerate(answer)]


@pytest.mark.parametrize("shaped_in", ["loss", "rollout"])
def test_trajectory_shaping_uses_only_the_groups_online_filtering_keeps(
    vlm, tmp_path, monkeypatch, shaped_in, tprl_args
):
    """On-policy the factors come from TRL's loss forward; with `num_iterations=2` (TRL computes the old log-probs)
    at rollout time. Both must normalise over the kept responses alone."""
    path, processor, dataset = vlm
    args = tprl_args(
        TPRLGRPOConfig,
        tmp_path,
        processor,
        online_filtering=True,
        filter_reward="_solved_on_red",
        seed=3,
        enable_trajectory_reweighting=True,
        trajectory_scaling_min=0.5,
        num_iterations=1 if shaped_in == "loss" else 2,
    )
    trainer = TPRLGRPOTrainer(
        model=path,
        reward_funcs=[_solved_on_red, colour_tokens],
        args=args,
        train_dataset=dataset,
        processing_class=processor,
    )
    batch = next(iter(trainer.get_train_dataloader()))  # unshuffled rows: groups of 4 consecutive rows
    kept = torch.tensor([example["answer"] != "red" for example in batch])
    assert kept.any() and not kept.all()
    # A known dependency (the forward is tested elsewhere); the dropped rows carry the largest values, so any
    # leak of theirs into the min-max normalisation would move every kept factor.
    dependency = torch.rand(len(batch), MAX_COMPLETION_LENGTH, generator=torch.Generator().manual_seed(0))
    dependency[~kept] += 5.0

    def known_dependency(output, inputs, policy_logps=None, needs_entropies=False):
        return dependency.clone(), torch.zeros_like(dependency), None

    monkeypatch.setattr(trainer, "_token_dependency", known_dependency)
    monkeypatch.setattr(tprl_trainer_module, "sampled_token_dependency", lambda logp, other: dependency.clone())
    trainer.model.train()
    output = trainer._generate_and_score_completions(batch)
    if shaped_in == "loss":
        assert PERTURBED_LOGPS_KEY in output
        trainer.current_gradient_accumulation_steps = 1
        trainer.compute_loss(trainer.model, output)
    assert PERTURBED_LOGPS_KEY not in output
    mask = output["completion_mask"].float()
    assert (mask[~kept] == 0).all() and (mask[kept].sum(1) > 0).all()

    # GRPO advantages of the kept groups by hand: (r - mean_g) / (std_g + 1e-4), r the sum of both rewards
    rewards = trainer._rewards_per_func.sum(1).view(-1, 4)
    base = ((rewards - rewards.mean(1, keepdim=True)) / (rewards.std(1, keepdim=True) + 1e-4)).view(-1)
    # VPPO's mean-preserving factors over the kept responses alone
    m = mask[kept]
    s = (dependency[kept] * m).sum(1) / m.sum(1)
    n = (s - s.min()) / (s.max() - s.min())
    beta_min = 0.5
    beta_max = beta_min + (1 - beta_min) / n.mean()
    alpha = beta_min + n * (beta_max - beta_min)
    torch.testing.assert_close(output["advantages"][kept] * m, (alpha * base[kept])[:, None] * m)
    assert (output["advantages"][~kept] == 0).all()
    assert trainer._metrics["train"]["tprl/scaling_factor_mean"][-1] == pytest.approx(1.0, abs=1e-6)
    # the same formula over every row (what a pre-filter mask gives) is far from it
    s_all = torch.cat([s, dependency[~kept].mean(1)])
    n_all = (s_all - s_all.min()) / (s_all.max() - s_all.min())
    alpha_all = beta_min + n_all * (1 - beta_min) / n_all.mean()
    assert (alpha_all[: len(s)] - alpha).abs().max() > 0.1


def test_rejects_an_empty_dataset_or_one_without_prompts(vlm, tmp_path, tprl_args):
    path, processor, _ = vlm
    args = tprl_args(TPRLGRPOConfig, tmp_path, processor)
    with pytest.raises(ValueError, match="train_dataset is empty"):
        TPRLGRPOTrainer(
            model=path, reward_funcs=colour_tokens, args=args, train_dataset=Dataset.from_dict({"prompt": []})
        )
    questions = Dataset.from_dict({"question": ["What colour?"], "answer": ["red"]})
    with pytest.raises(ValueError, match=r"no 'prompt' column \(its columns: \['question', 'answer'\]\)"):
        TPRLGRPOTrainer(model=path, reward_funcs=colour_tokens, args=args, train_dataset=questions)


def test_resume_continues_the_kl_coefficient_and_the_perturbations(vlm, tmp_path, tprl_args):
    path, processor, dataset = vlm

    def run(output_dir, resume_from_checkpoint=None):
        masks = []

        def recording_blackening(image, rng):
            perturbed = random_patch_blackening(image, rng, patch_size=14, probability=0.5)
            masks.append((np.array(perturbed) == 0).all(-1))
            return perturbed

        args = tprl_args(
            TPRLGRPOConfig,
            output_dir,
            processor,
            max_steps=3,
            save_strategy="steps",
            save_steps=1,
            beta=0.1,
            kl_controller="adaptive",
            kl_target=0.01,
            kl_horizon=50,
            enable_trajectory_reweighting=True,
        )
        trainer = TPRLGRPOTrainer(
            model=path,
            reward_funcs=colour_tokens,
            args=args,
            train_dataset=dataset,
            processing_class=processor,
            perturbation_fn=recording_blackening,
        )
        first_step = (
            trainer.state.global_step if resume_from_checkpoint is None else int(resume_from_checkpoint.split("-")[-1])
        )
        trainer.train(resume_from_checkpoint=resume_from_checkpoint)
        coefs = [
            h["grpo/kl_coef"] for h in trainer.state.log_history if "grpo/kl_coef" in h and h["step"] > first_step
        ]
        weights = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
        return trainer, coefs, np.stack(masks).reshape(-1, 8, *masks[0].shape), weights

    full, full_coefs, full_masks, full_weights = run(tmp_path / "full")
    assert len(full_coefs) == 3 and len(set(full_coefs)) == 3  # beta moves at every step
    assert not np.array_equal(full_masks[0], full_masks[1])  # fresh patches at every rollout
    with open(tmp_path / "full" / "checkpoint-1" / "trl_ext_state_0.json") as f:
        assert json.load(f)["kl_controller"]["coef"] == pytest.approx(full_coefs[1])
    resumed, coefs, masks, weights = run(tmp_path / "resumed", str(tmp_path / "full" / "checkpoint-1"))
    print(f"beta per step: uninterrupted {full_coefs}, resumed at step 1 {coefs}")
    assert coefs == full_coefs[1:] and resumed.beta == full.beta
    assert np.array_equal(masks, full_masks[1:])
    torch.testing.assert_close(weights, full_weights, rtol=0, atol=0)  # the model too (Qwen2.5-VL's renamed keys)


def test_model_card_names_the_base_model(vlm, tmp_path, tprl_args):
    path, processor, dataset = vlm
    args = tprl_args(TPRLGRPOConfig, tmp_path / "out", processor)
    trainer = TPRLGRPOTrainer(
        model=path, reward_funcs=colour_tokens, args=args, train_dataset=dataset, processing_class=processor
    )
    trainer.save_model()
    card = ModelCard.load(tmp_path / "out" / "README.md")
    # a local directory: no base_model, as in TRL's card, and no "[None](https://huggingface.co/None)" link
    assert card.data.base_model is None and "base_model" not in card.content and path not in card.content
    assert "fine-tuned version of a local model (no Hub id)" in card.text and "huggingface.co/None" not in card.text
    assert {"trl", "grpo", "tprl"} <= set(card.data.tags) and "2510.09285" in card.text
    # a Hub model: the same card as TRL's, with its link
    trainer.model.config._name_or_path = "Qwen/Qwen2.5-VL-3B-Instruct"
    trainer.create_model_card()
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert card.data.base_model == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert "[Qwen/Qwen2.5-VL-3B-Instruct](https://huggingface.co/Qwen/Qwen2.5-VL-3B-Instruct)" in card.text
    # a directory of the Hugging Face cache: its Hub id, with the link
    cache = tmp_path / "hub" / "models--Qwen--Qwen2.5-VL-3B-Instruct" / "snapshots" / "0123abc"
    cache.mkdir(parents=True)
    trainer.model.config._name_or_path = str(cache)
    trainer.create_model_card()
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert card.data.base_model == "Qwen/Qwen2.5-VL-3B-Instruct" and str(cache) not in card.content
    assert "[Qwen/Qwen2.5-VL-3B-Instruct](https://huggingface.co/Qwen/Qwen2.5-VL-3B-Instruct)" in card.text
    assert model_card_name("/elsewhere/hub/models--Qwen--Qwen2.5-VL-3B-Instruct/snapshots/0123abc") == (
        "Qwen/Qwen2.5-VL-3B-Instruct"
    )
    assert model_card_name(str(tmp_path)) is None and model_card_name("Qwen/Qwen2.5-VL-3B-Instruct") == (
        "Qwen/Qwen2.5-VL-3B-Instruct"
    )


class _RewardWithParts:
    """A reward that exposes the parts of its last call, as FlowRTPOReward and LaTeXReward do."""

    __name__ = "with_parts"

    def __call__(self, completions, **kwargs):
        n = len(completions)
        self.last_components = {
            "length": [float(i) for i in range(n)],
            "partial": [float("nan")] + [1.0] * (n - 1),  # NaN values are left out of the mean
            "threshold": 0.25,  # a scalar
            "note": "ignored",
        }
        return [1.0] * n


def test_reward_components_are_logged_per_part(vlm, tmp_path, tprl_args):
    path, processor, dataset = vlm
    args = tprl_args(TPRLGRPOConfig, tmp_path, processor)
    trainer = TPRLGRPOTrainer(
        model=path, reward_funcs=_RewardWithParts(), args=args, train_dataset=dataset, processing_class=processor
    )
    trainer.model.train()
    trainer._generate_and_score_completions(next(iter(trainer.get_train_dataloader())))
    metrics = trainer._metrics["train"]
    assert metrics["rewards/with_parts/length"] == [pytest.approx(sum(range(8)) / 8)]
    assert metrics["rewards/with_parts/partial"] == [1.0] and metrics["rewards/with_parts/threshold"] == [0.25]
    assert not any(key.endswith("/note") for key in metrics) and math.isfinite(metrics["reward"][-1])


def test_a_model_path_without_a_processor_loads_it_without_torchvision(vlm, tmp_path, tprl_args):
    """GRPOTrainer's `AutoProcessor.from_pretrained` needs torchvision for the Qwen-VL video processor; TPRL loads the
    same processor class without it, with GRPOTrainer's left padding and truncation, and saves it with the model."""
    from transformers import AutoProcessor

    path, processor, dataset = vlm
    with pytest.raises(ImportError, match="[Tt]orchvision"):
        AutoProcessor.from_pretrained(path)
    args = tprl_args(TPRLGRPOConfig, tmp_path / "out", processor)
    trainer = TPRLGRPOTrainer(model=path, reward_funcs=colour_tokens, args=args, train_dataset=dataset)
    loaded = trainer.processing_class
    assert type(loaded).__name__ == "Qwen2_5_VLProcessor" and loaded.video_processor is None
    assert (loaded.tokenizer.padding_side, loaded.tokenizer.truncation_side) == ("left", "left")
    trainer.train()
    trainer.save_model()
    reloaded = load_vlm_processor(tmp_path / "out")
    image = Image.new("RGB", (56, 56), (200, 30, 30))
    expected = processor.image_processor(images=[image], return_tensors="pt")
    got = reloaded.image_processor(images=[image], return_tensors="pt")
    assert torch.equal(got["pixel_values"], expected["pixel_values"])
    assert reloaded.tokenizer("a red square").input_ids == processor.tokenizer("a red square").input_ids
