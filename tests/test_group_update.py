"""The clipped group-policy update shared by SEDD PPO and Flow-GRPO (`trl_ext.trainers.group_update`), and the
group-batch checks their configs share, against hand-computed values."""

import math
from dataclasses import dataclass, field

import pytest
import torch
from transformers import TrainingArguments

from trl_ext import DiscreteDiffusionPPOConfig, FlowGRPOConfig
from trl_ext.trainers.group_update import GroupPolicyTrainer, PolicyTerm


@dataclass
class ToyConfig(TrainingArguments):
    beta: float = field(default=0.0, metadata={"help": "KL coefficient."})
    epsilon: float = field(default=0.2, metadata={"help": "Lower clipping range."})
    epsilon_high: float | None = field(default=None, metadata={"help": "Upper clipping range."})
    num_mini_batches: int = field(default=1, metadata={"help": "Optimizer updates per rollout batch."})


class ToyTrainer(GroupPolicyTrainer):
    """Sample i's log-probability is theta_i (theta starts at 0, the rollout policy's value); its KL to the reference
    is (theta_i - r_i)^2."""

    metric_prefix = "toy"

    def __init__(self, args: ToyConfig, num_samples: int):
        super().__init__(args)
        self._setup_data(num_samples, num_samples)
        self._set_update_accumulation()
        self.theta = torch.nn.Parameter(torch.zeros(num_samples))
        module = torch.nn.Module()
        module.theta = self.theta
        self._prepare(module, [self.theta])


def _toy(tmp_path, **overrides) -> ToyTrainer:
    args = ToyConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        report_to="none",
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        optim="sgd",
        learning_rate=1.0,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        max_steps=1,
        disable_tqdm=True,
        save_strategy="no",
        **overrides,
    )
    return ToyTrainer(args, num_samples=4)


@pytest.mark.parametrize("num_terms", [1, 2])
def test_on_policy_update_is_the_weighted_mean_gradient_and_unscored_samples_do_not_move(tmp_path, num_terms):
    trainer = _toy(tmp_path, beta=0.5)
    advantages = torch.tensor([1.0, -2.0, 3.0, 0.5])
    reference = torch.tensor([0.1, 0.2, -0.3, 0.4])
    unscored = torch.tensor([False, False, True, False])

    def policy_terms(micro_batch):
        for _ in range(num_terms):  # identical terms: each backpropagated divided by num_terms
            theta = trainer.theta[micro_batch]
            yield PolicyTerm(theta - 0.0, (theta - reference[micro_batch]) ** 2, {"toy": 7.0})

    logs = trainer.group_policy_update(policy_terms, advantages, unscored, torch.device("cpu"), num_terms=num_terms)
    # one SGD step (lr 1) on the mean over the 3 scored samples of -A_i * ratio_i + beta * (theta_i - r_i)^2, whose
    # gradient at theta = 0 is (-A_i - 2 * beta * r_i) / 3: theta_i = (A_i + 2 * beta * r_i) / 3, and 0 unscored
    expected = torch.tensor([(1.0 + 0.1) / 3, (-2.0 + 0.2) / 3, 0.0, (0.5 + 0.4) / 3])
    torch.testing.assert_close(trainer.theta.detach(), expected)
    assert logs["toy/ratio"] == 1.0 and logs["clip_ratio/region_mean"] == 0.0 and logs["toy"] == 7.0
    # kl: the unweighted mean per micro-batch, averaged over the micro-batches (the order of randperm is the
    # loop's); its mean over both micro-batches is the mean of r^2 whatever the split
    assert logs["kl"] == pytest.approx(float((reference**2).mean()))
    # loss: per micro-batch sum of w_i * (-A_i + beta * r_i^2), w_i = 2 / 3 for a scored sample; summed over the two
    # micro-batches it is 2/3 * sum over scored samples
    scored_terms = [-1.0 + 0.5 * 0.01, 2.0 + 0.5 * 0.04, -0.5 + 0.5 * 0.16]
    assert 2 * logs["loss"] == pytest.approx(2 / 3 * sum(scored_terms))


def test_second_minibatch_is_off_policy_and_clipped(tmp_path):
    # every sample's log-probability is theta_0: the first minibatch's update (on-policy, mean advantage 1, lr 1)
    # moves it to 1, so the second sees ratio e > 1 + epsilon with positive advantages: clipped, no gradient
    trainer = _toy(tmp_path, num_mini_batches=2, epsilon=0.1)

    def policy_terms(micro_batch):
        yield PolicyTerm(trainer.theta[0].expand(len(micro_batch)))

    logs = trainer.group_policy_update(
        policy_terms, torch.ones(4), torch.zeros(4, dtype=torch.bool), torch.device("cpu")
    )
    torch.testing.assert_close(trainer.theta.detach(), torch.tensor([1.0, 0.0, 0.0, 0.0]))
    assert logs["toy/ratio"] == pytest.approx((1 + math.e) / 2) and logs["clip_ratio/region_mean"] == 0.5
    assert "kl" not in logs


def test_metrics_have_trl_grpo_names(tmp_path):
    # trl.GRPOTrainer's names (`clip_ratio/...`, `kl`), the transformers Trainer's (`loss`; `grad_norm` with
    # max_grad_norm > 0), the rest under `<metric_prefix>/`. One minibatch of 4, theta = log ratio = [0.5, -0.5, 0.5, -0.5] (off-policy), epsilon 0.2:
    # ratios e^0.5 = 1.65 and e^-0.5 = 0.61 are outside [0.8, 1.2]; with advantages [1, -1, -1, 1] sample 0 is clipped
    # high (ratio > 1.2, A > 0), sample 1 low (ratio < 0.8, A < 0), samples 2 and 3 not (the min is the unclipped term)
    trainer = _toy(tmp_path, beta=0.1)
    theta = torch.tensor([0.5, -0.5, 0.5, -0.5])

    def policy_terms(micro_batch):
        yield PolicyTerm(theta[micro_batch] + 0.0 * trainer.theta[micro_batch], torch.zeros(len(micro_batch)))

    advantages = torch.tensor([1.0, -1.0, -1.0, 1.0])
    logs = trainer.group_policy_update(policy_terms, advantages, torch.zeros(4, dtype=torch.bool), torch.device("cpu"))
    assert set(logs) == {
        "loss",
        "kl",
        "clip_ratio/low_mean",
        "clip_ratio/high_mean",
        "clip_ratio/region_mean",
        "toy/ratio",
    }
    # two micro-batches of two samples in the loop's random order: each metric is the mean of the two means
    assert logs["clip_ratio/low_mean"] == 0.25 and logs["clip_ratio/high_mean"] == 0.25
    assert logs["clip_ratio/region_mean"] == 0.5
    assert logs["toy/ratio"] == pytest.approx((math.exp(0.5) + math.exp(-0.5)) / 2)


def test_group_trainer_configs_share_the_group_batch_checks(tmp_path):
    common = dict(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    for config_class in (DiscreteDiffusionPPOConfig, FlowGRPOConfig):
        with pytest.raises(ValueError, match=r"num_generations must be >= 2 for group advantages, got 1\."):
            config_class(**common, num_generations=1, per_device_train_batch_size=4)
        with pytest.raises(ValueError, match=r"= 6, must be a multiple of num_generations \(4\) and of num_mini"):
            config_class(**common, num_generations=4, per_device_train_batch_size=6)
        with pytest.raises(
            ValueError, match=r"= 8, must be a multiple of num_generations \(4\) and of num_mini_batches \(3\)"
        ):
            config_class(**common, num_generations=4, per_device_train_batch_size=8, num_mini_batches=3)
