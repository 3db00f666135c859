# Copyright 2026 The trl_ext Authors. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""Trainers: one folder per method (`grpo/`, `tprl/`, `flow/`, `diffusion_lm/` with SEDD's PPO and SFT, `ppo/`) and the
shared pieces of the trainers that own their loop: `loop.RLLoopTrainer` (the loop contract), `checkpointing`
(complete-or-absent checkpoints and bit-identical resume), `hub_push` (`push_to_hub` / `hub_strategy`),
`group_update.GroupPolicyTrainer` (the one clipped group-policy update of Diffusion-LM GRPO / SEDD PPO and Flow-GRPO)
with its config base `group_config.GroupPolicyConfig`, and `validation` (config checks).

Names: one concept, one name, TRL's. `PPOConfig` keeps the names of TRL's last PPOConfig (a TRL PPO script ports by
changing its import); every other config uses `trl.GRPOConfig`'s. This table is the reference (tests/test_names.py
checks that every config field it names exists, and that SEDD PPO, Diffusion-LM GRPO and Flow use the GRPO column's
names); `—`: no such setting.

| Concept | ExtendedGRPO / TPRL | Flow-GRPO / RTPO | SEDD PPO | Diffusion-LM GRPO | PPO (token-level) | RLHF pipeline |
|---|---|---|---|---|---|---|
| rollout batches (training steps) | `max_steps` | `max_steps` | `max_steps` | `max_steps` | `max_steps` or `total_episodes` | `ppo_max_steps` (alias `ppo_iterations`) |
| passes (epochs) over each rollout batch | `num_iterations` | — (one) | `num_iterations` | `num_iterations` | `num_ppo_epochs` | `ppo_num_ppo_epochs` (alias `ppo_epochs`) |
| optimizer updates per pass | — (`steps_per_generation` / `gradient_accumulation_steps`) | `num_mini_batches` | `num_mini_batches` | `num_mini_batches` | `num_mini_batches` | `ppo_batch_size` / `ppo_mini_batch_size` |
| completions per prompt (group size) | `num_generations` | `num_generations` | `num_generations` | `num_generations` | — (one) | — (one) |
| completion length | `max_completion_length` | — (images) | `max_completion_length` | `max_completion_length` | `response_length` | `ppo_args["response_length"]` |
| clipping range of the ratio (lower, upper) | `epsilon`, `epsilon_high` | `epsilon`, `epsilon_high`; editor: `editor_epsilon` | `epsilon`, `epsilon_high` | `epsilon`, `epsilon_high` | `cliprange` | `ppo_args["cliprange"]` |
| dual clip (cap −δ·A on negative advantages) | `delta` | — | — | — | `delta` | `ppo_args["delta"]` |
| clipping range of the value | — | — | — | — | `cliprange_value` | `ppo_args["cliprange_value"]` |
| KL coefficient β | `beta` | `beta` | `beta` | `beta` | `kl_coef` | `ppo_args["kl_coef"]` |
| KL controller (fixed / adaptive) | `kl_controller` | — (fixed) | — (fixed) | — (fixed) | `kl_controller` | `ppo_args["kl_controller"]` |
| KL estimator | `kl_estimator` | — (exact Gaussian KL) | — (k3) | — (k3) | `kl_estimator` | `ppo_args["kl_estimator"]` |
| advantage scaling | `scale_rewards` | `scale_rewards` | `scale_rewards` | `scale_rewards` | — (whitened) | — (whitened) |
| weights of the rewards | `reward_weights` | `reward_weights` | `reward_weights` | `reward_weights` | `reward_weights` | `ppo_args["reward_weights"]` |

LoRA takes TRL's `ModelConfig` names (`use_peft`, `lora_r`, `lora_alpha`, `lora_target_modules`: SEDD PPO; Flow always
trains LoRA, so it has no `use_peft`); GRPO and PPO take a `peft_config`. Outside the configs:

- the KL controller object is `trainer.kl_controller` (ExtendedGRPO / TPRL and PPO, built from `args.kl_controller`;
  PPO checkpoints its coefficient under `kl_coef`), and β the trainer uses is `trainer.kl_controller.coef`;
- `rl.losses.clipped_surrogate_loss(log_ratio, advantages, epsilon_low, epsilon_high, delta)` (GRPOTrainer's
  `epsilon_low` / `epsilon_high`, GRPOConfig's `delta`) and `rl.losses.clipped_value_loss(values, old_values, returns,
  cliprange_value)` (PPOConfig's name); `GroupPolicyTrainer.group_policy_update(..., num_iterations)`.

Logged metrics take `trl.GRPOTrainer`'s names where it has one, TRL's last PPOTrainer's in the token-level PPO
trainer (its port promise), transformers' `loss` / `grad_norm` / `learning_rate`; a method's own go under `<method>/`:

| Metric | ExtendedGRPO / TPRL | Flow-GRPO / RTPO | SEDD PPO | Diffusion-LM GRPO | PPO (token-level) |
|---|---|---|---|---|---|
| fraction of clipped ratios | `clip_ratio/low_mean`, `clip_ratio/high_mean`, `clip_ratio/region_mean` | the same three; editor: `editor/clip_ratio/region_mean` | the same three | the same three | `policy/clipfrac_avg` (value: `val/clipfrac_avg`) |
| KL to the reference | `kl` | `kl` | `kl` | `kl` | `objective/kl` |
| β in use | `grpo/kl_coef` | — | — | — | `objective/kl_coef` |
| mean ratio | — | `flow/ratio`; editor: `editor/ratio` | `sedd/ratio` | `diffusion_lm/ratio` | `val/ratio` |
| entropy | `entropy` | — | — | — | `policy/entropy_avg` |
| rewards | `reward`, `reward_std`, `rewards/<name>/mean`, `rewards/<name>/std` | the same | the same | the same | the same, and `objective/scores` |
| masked samples | — | `unscored_count`, `skipped_steps_count`, `rewards/<name>/masked_count` | the same | the same | the same |
| the method's own | `grpo/...`, `tprl/...` | `flow/...`, `editor/...` | `sedd/elbo_nll`, `sedd/old_elbo_nll` | `diffusion_lm/log_likelihood`, `diffusion_lm/old_log_likelihood`, `diffusion_lm/log_likelihood_draw_std` | TRL PPO's `objective/...`, `policy/...`, `loss/...`, `val/...`, `eps`, `lr` |
"""
